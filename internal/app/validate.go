package app

import (
	"errors"
	"fmt"
	"log/slog"
	"os/exec"

	"github.com/haconfd/haconfd/internal/confd"
	"github.com/haconfd/haconfd/internal/config"
)

// ValidateConfig checks what `haconfd run` would need beyond the settings
// themselves (config.Load validated those): the templates parse, the
// HAProxy binary is there, the HAProxy manager accepts its paths, and a
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
	} else if _, err := NewManager(cfg, logger); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
