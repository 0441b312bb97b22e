package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are haconfd's Prometheus metrics, all named haconfd_*.
type Metrics struct {
	Registry       *prometheus.Registry
	Applies        *prometheus.CounterVec // result, method
	Reloads        prometheus.Counter
	Starts         prometheus.Counter
	Rollbacks      prometheus.Counter
	HeldServers    *prometheus.GaugeVec // section, guard
	Repairs        prometheus.Counter
	GuardHolds     *prometheus.CounterVec // guard
	EtcdConnected  prometheus.Gauge
	AppliedRev     prometheus.Gauge
	SeenRev        prometheus.Gauge
	Servers        *prometheus.GaugeVec // section, state
	SkippedNodes   prometheus.Gauge
	RenderDuration prometheus.Histogram
	ApplyDuration  *prometheus.HistogramVec // method
}

// NewMetrics registers haconfd's metrics (and the Go and process
// collectors) on a new registry.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	m := &Metrics{
		Registry: r,
		Applies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "haconfd_applies_total",
			Help: "Changes made live (result ok) or failed (result error), by method: runtime, write, start, reload; failures by stage (render, plan, runtime, write, start, reload, check)."}, []string{"result", "method"}),
		Reloads: prometheus.NewCounter(prometheus.CounterOpts{Name: "haconfd_reloads_total", Help: "HAProxy reloads done (not counting starts)."}),
		Starts:  prometheus.NewCounter(prometheus.CounterOpts{Name: "haconfd_starts_total", Help: "HAProxy starts done (no HAProxy was running)."}),
		HeldServers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "haconfd_held_servers",
			Help: "Servers a guard keeps configured although their nodes left, by section and guard."}, []string{"section", "guard"}),
		Repairs: prometheus.NewCounter(prometheus.CounterOpts{Name: "haconfd_repairs_total",
			Help: "Servers whose live state in HAProxy differed from haconfd's view (changed by hand, HAProxy restarted) and was repaired."}),
		Rollbacks: prometheus.NewCounter(prometheus.CounterOpts{Name: "haconfd_rollbacks_total", Help: "Applies rolled back to the last good config."}),
		GuardHolds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "haconfd_guard_holds_total",
			Help: "Servers (or a first start) held back by a guard (min_servers, max_remove)."}, []string{"guard"}),
		EtcdConnected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "haconfd_etcd_connected", Help: "1 while the etcd watch is connected."}),
		AppliedRev:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "haconfd_last_applied_revision", Help: "etcd revision of the live config."}),
		SeenRev:       prometheus.NewGauge(prometheus.GaugeOpts{Name: "haconfd_last_seen_revision", Help: "Newest etcd revision received."}),
		Servers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "haconfd_servers",
			Help: "Servers in the live config, by section and node state."}, []string{"section", "state"}),
		SkippedNodes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "haconfd_skipped_nodes", Help: "Malformed nodes left out of the newest render."}),
		RenderDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "haconfd_render_duration_seconds",
			Help: "Time to render a snapshot.", Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)}),
		ApplyDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "haconfd_apply_duration_seconds",
			Help: "Time to apply a config, by method.", Buckets: prometheus.ExponentialBuckets(0.0005, 3, 12)}, []string{"method"}),
	}
	for _, c := range []prometheus.Collector{m.Applies, m.Reloads, m.Starts, m.HeldServers, m.Repairs, m.Rollbacks, m.GuardHolds, m.EtcdConnected,
		m.AppliedRev, m.SeenRev, m.Servers, m.SkippedNodes, m.RenderDuration, m.ApplyDuration,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		f(c)
	}
	return m
}

// Handler serves /metrics, /healthz, /readyz, /status and /events (the
// last events, oldest first, as JSON).
func Handler(board *Board, bus *Bus, m *Metrics) http.Handler {
	mux := http.NewServeMux()
	if m != nil {
		mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := board.Get().Ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, why)
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, board.Get())
	})
	mux.HandleFunc("/events", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, bus.Recent())
	})
	mux.HandleFunc("/servers", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, board.Servers())
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// Serve runs the HTTP endpoints on addr until ctx ends. It returns once
// the listener is bound (or failed), reporting the bound address.
func Serve(ctx context.Context, addr string, h http.Handler, logger *slog.Logger) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", configErr(fmt.Errorf("--listen %s: %w", addr, err))
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http server", "err", err)
		}
	}()
	return ln.Addr().String(), nil
}
