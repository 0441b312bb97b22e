package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/confd"
	"github.com/haconfd/haconfd/internal/config"
)

// ValidateConfig checks what `haconfd run` would need beyond the settings
// themselves (config.Load validated those): the templates parse, the
// HAProxy binary is there and is a version haconfd runs on (2.6 or
// newer), the HAProxy manager accepts its paths, and a
// --confdir loads. Every problem is returned, joined, one line each. It
// starts nothing and writes nothing.
func ValidateConfig(cfg config.Config, logger *slog.Logger) error {
	var errs []error
	if cfg.Confdir != "" {
		g, err := ConfdGlobal(cfg)
		if err == nil {
			_, err = confd.Load(logger, g)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("--confdir %s: %w", cfg.Confdir, err))
		}
		return errors.Join(errs...)
	}
	if _, err := NewRenderer(cfg); err != nil {
		errs = append(errs, err)
	}
	if _, err := exec.LookPath(cfg.HAProxyBin); err != nil && cfg.ReloadCmd == "" {
		errs = append(errs, fmt.Errorf("--haproxy-bin: %s not found", cfg.HAProxyBin))
	} else {
		var v haproxy.Version
		if err == nil {
			if v, err = CheckHAProxy(context.Background(), cfg.HAProxyBin); err != nil {
				errs = append(errs, err)
			} else {
				logger.Info("haproxy binary", "bin", cfg.HAProxyBin, "version", v.String(), "methods", v.Caps().Methods())
			}
		}
		if _, err := NewManager(cfg, v, logger); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CheckHAProxy runs `--haproxy-bin -v` and returns the version of the
// HAProxy haconfd is to drive, or a configuration error (exit 2) that
// names the flag, the binary, what it printed or the version it found,
// and why haconfd will not run on it: older than
// haproxy.MinMajor.MinMinor, or no version to read.
func CheckHAProxy(ctx context.Context, bin string) (haproxy.Version, error) {
	v, err := haproxy.BinaryVersion(ctx, bin)
	if err != nil {
		return v, configErr(fmt.Errorf("--haproxy-bin: %w", err))
	}
	if err := v.Supported(); err != nil {
		return v, configErr(fmt.Errorf("--haproxy-bin %s: %w", bin, err))
	}
	return v, nil
}
