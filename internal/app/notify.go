package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// The systemd notify protocol (sd_notify(3)) for a unit with Type=notify
// and WatchdogSec=. Every helper is a no-op when systemd did not ask for
// it (no NOTIFY_SOCKET, no WATCHDOG_USEC), so haconfd behaves the same
// under a terminal, a container runtime, fleet or systemd.

// NotifyReady tells systemd that haconfd has started (READY=1). It
// reports whether the message was sent; failures are logged, never fatal.
func NotifyReady(logger *slog.Logger) bool {
	return notify(logger, daemon.SdNotifyReady)
}

// NotifyStopping tells systemd that haconfd is shutting down
// (STOPPING=1), so that a slow shutdown is not mistaken for a hang.
func NotifyStopping(logger *slog.Logger) bool {
	return notify(logger, daemon.SdNotifyStopping)
}

// NotifyStatus sets the one-line status `systemctl status` shows.
func NotifyStatus(logger *slog.Logger, status string) bool {
	return notify(logger, "STATUS="+status)
}

func notify(logger *slog.Logger, state string) bool {
	sent, err := daemon.SdNotify(false, state)
	if err != nil {
		logger.Warn("systemd notify failed", "state", state, "err", err)
		return false
	}
	return sent
}

// Watchdog keeps systemd's watchdog (WatchdogSec= in the unit) fed until
// ctx ends: every half interval it sends WATCHDOG=1, but only while
// healthy() says true, so a haconfd whose loop is stuck (healthy blocks
// or returns false) stops pinging and systemd restarts it. Without a
// watchdog configured for this process it returns at once.
func Watchdog(ctx context.Context, logger *slog.Logger, healthy func() bool) {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		logger.Warn("systemd watchdog settings unreadable, watchdog not fed", "err", err)
		return
	}
	if interval <= 0 {
		return
	}
	tick := time.NewTicker(interval / 2)
	defer tick.Stop()
	logger.Debug("feeding the systemd watchdog", "interval", interval)
	wasHealthy := true
	for {
		if healthy() {
			if !wasHealthy {
				logger.Info("healthy again, feeding the systemd watchdog")
			}
			wasHealthy = true
			notify(logger, daemon.SdNotifyWatchdog)
		} else if wasHealthy {
			logger.Error("unhealthy: not feeding the systemd watchdog; systemd restarts haconfd after WatchdogSec", "interval", interval)
			wasHealthy = false
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
