package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/internal/etcdclient"
	"github.com/haconfd/haconfd/internal/etcdserver"
	"github.com/haconfd/haconfd/render"
	"github.com/haconfd/haconfd/templates"
	"github.com/haconfd/haconfd/watch"
)

// ErrConfig marks errors in what the operator gave (templates, files,
// TLS material): the command exits 2 for them.
var ErrConfig = errors.New("configuration error")

// configError is an error in what the operator gave: its text is the
// cause's, and errors.Is(err, ErrConfig) holds.
type configError struct{ err error }

func (e configError) Error() string        { return e.err.Error() }
func (e configError) Unwrap() error        { return e.err }
func (e configError) Is(target error) bool { return target == ErrConfig }

func configErr(err error) error { return configError{err} }

// NewRenderer builds the renderer that cfg describes: the embedded base
// and galera template by default, or the operator's --template, with the
// static --base file in front.
func NewRenderer(cfg config.Config) (*render.Renderer, error) {
	var tmpls []render.Template
	var base []byte
	if cfg.Base != "" {
		b, err := os.ReadFile(cfg.Base)
		if err != nil {
			return nil, configErr(fmt.Errorf("--base: %w", err))
		}
		base = b
	}
	if cfg.Template == "" {
		names := []string{templates.Galera}
		if cfg.Base == "" {
			names = []string{templates.Base, templates.Galera}
		}
		for _, n := range names {
			text, err := templates.File(n)
			if err != nil {
				return nil, fmt.Errorf("embedded template %s: %w", n, err)
			}
			tmpls = append(tmpls, render.Template{Name: n, Text: text})
		}
	} else {
		text, err := os.ReadFile(cfg.Template)
		if err != nil {
			return nil, configErr(fmt.Errorf("--template: %w", err))
		}
		tmpls = append(tmpls, render.Template{Name: cfg.Template, Text: string(text)})
	}
	vars := map[string]string{
		"bind":           cfg.Bind,
		"check_port":     cfg.CheckPort,
		"runtime_socket": cfg.RuntimeSocket,
		"state_file":     cfg.StateFile,
		"writer_bind":    cfg.WriterBind,
		"reader_bind":    cfg.ReaderBind,
	}
	if cfg.SingleWriter {
		vars["single_writer"] = "true"
	}
	for k, v := range cfg.Vars {
		vars[k] = v
	}
	r, err := render.New(render.Options{
		Templates: tmpls,
		Base:      base,
		Prefixes:  cfg.Prefixes,
		Vars:      vars,
		Getenv:    os.Getenv,
		// Galera routing (galera.go).
		Galera:       galeraPolicy(cfg),
		DefaultPort:  cfg.DefaultPort,
		ClusterBinds: cfg.ClusterBinds,
		WriterKeys:   writerKeys(cfg),
	})
	if err != nil {
		return nil, configErr(err)
	}
	return r, nil
}

// NewManager builds the HAProxy manager that cfg describes.
func NewManager(cfg config.Config, v haproxy.Version, logger *slog.Logger) (*haproxy.Manager, error) {
	m, err := haproxy.New(haproxy.Options{
		Bin:          cfg.HAProxyBin,
		ConfigPath:   cfg.Output,
		PIDFile:      cfg.PIDFile,
		Socket:       cfg.RuntimeSocket,
		ReloadCmd:    cfg.ReloadCmd,
		Settle:       cfg.Settle,
		StateFile:    cfg.StateFile,
		Supervise:    cfg.Supervise,
		MasterSocket: masterSocket(cfg),
		Version:      v,
		Logger:       logger,
	})
	if err != nil {
		return nil, configErr(err)
	}
	return m, nil
}

// Etcd is the etcd haconfd talks to: the client, and the embedded server
// when --embedded-etcd asked for one.
type Etcd struct {
	*etcdclient.Client
	server *etcdserver.Server
}

// Close closes the client and stops an embedded server.
func (e *Etcd) Close() {
	if e.Client != nil {
		_ = e.Client.Close()
	}
	if e.server != nil {
		e.server.Close()
	}
}

// ConnectEtcd starts the embedded etcd if asked and returns a client
// (etcdclient.Connect). The client does not wait for etcd: an unreachable
// etcd is retried by the watcher, never turned into an empty config.
func ConnectEtcd(ctx context.Context, cfg config.Config, logger *slog.Logger) (*Etcd, error) {
	e := &Etcd{}
	settings := cfg.Etcd
	if cfg.EmbeddedEtcd != "" {
		srv, err := etcdserver.Start(ctx, etcdserver.Options{Dir: cfg.EmbeddedEtcd, ClientURL: cfg.EmbeddedEtcdURL})
		if err != nil {
			return nil, fmt.Errorf("--embedded-etcd %s: %w", cfg.EmbeddedEtcd, err)
		}
		e.server = srv
		settings.EtcdEndpoints = srv.Endpoints()
		logger.Info("embedded etcd started", "endpoints", settings.EtcdEndpoints, "dir", cfg.EmbeddedEtcd)
	}
	cli, err := etcdclient.Connect(ctx, settings, logger)
	if err != nil {
		e.Close()
		switch {
		case errors.Is(err, etcdclient.ErrCredentials):
			return nil, configErr(fmt.Errorf("--etcd-username %s: etcd rejected the credentials: %w", cfg.EtcdUsername, err))
		case errors.Is(err, etcdclient.ErrTLSFiles):
			return nil, configErr(fmt.Errorf("etcd TLS: %w", err))
		}
		return nil, err
	}
	e.Client = cli
	return e, nil
}

// NewWatcher returns the etcd source for cfg's prefixes.
func NewWatcher(etcd *Etcd, cfg config.Config, logger *slog.Logger) (*watch.EtcdSource, error) {
	w, err := watch.NewEtcdSource(etcd.Client.Client, watch.Options{
		Prefixes: watchPrefixes(cfg, sharedWriterKeys(context.Background(), cfg, etcd, logger)),
		Logger:   logger.With("component", "watch"),
		Diagnose: etcd.Diagnose,
	})
	if err != nil {
		return nil, configErr(err)
	}
	return w, nil
}

// SettingsReader re-reads the configuration (file, environment, flags)
// for a config-file change or SIGHUP.
type SettingsReader func() (config.Config, error)

// Run is `haconfd run`: wire everything from cfg and drive the loop until
// ctx ends. reload (may be nil) re-reads the settings on SIGHUP or when
// the config file changes; templates are re-read then too.
func Run(ctx context.Context, cfg config.Config, logger *slog.Logger, stdout *os.File, reload SettingsReader) error {
	if cfg.Once {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, onceTimeout)
		defer cancel()
	}
	if cfg.Confdir != "" {
		g, err := ConfdGlobal(cfg)
		if err != nil {
			return err
		}
		etcd, err := ConnectEtcd(ctx, cfg, logger)
		if err != nil {
			return err
		}
		defer etcd.Close()
		return RunConfdDir(ctx, g, etcd.Client.Client, cfg.WaitMin, logger)
	}
	hv, err := CheckHAProxy(ctx, cfg.HAProxyBin)
	if err != nil {
		return err
	}
	logger.Info("haproxy binary", "bin", cfg.HAProxyBin, "version", hv.String(), "methods", hv.Caps().Methods())
	rend, err := NewRenderer(cfg)
	if err != nil {
		return err
	}
	mgr, err := NewManager(cfg, hv, logger)
	if err != nil {
		return err
	}
	var rt Runtime
	if cfg.RuntimeSocket != "" && cfg.Apply != config.ApplyReload && !cfg.DryRun {
		r, err := haproxy.NewRuntime(cfg.RuntimeSocket, logger.With("component", "runtime"), hv.Caps())
		if err != nil {
			return configErr(fmt.Errorf("--runtime-socket: %w", err))
		}
		rt = r
	}
	etcd, err := ConnectEtcd(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer etcd.Close()
	fl := newFleetGlue(cfg, logger)
	if fl != nil {
		if err := fl.attach(etcd.Client.Client); err != nil {
			return err
		}
	}
	board, bus, metrics := &Board{}, NewBus(), NewMetrics()
	writers := sharedWriterKeys(ctx, cfg, etcd, logger) // the fleet's writers, "" when not shared
	version := hv.String()
	board.Update(func(s *Status) { s.HAProxy.Version, s.HAProxy.Methods = version, hv.Caps().Methods() })
	var slot ReloadSlot
	if fl != nil {
		slot = fl.slot()
	}
	target := NewHAProxyTarget(rend, mgr, rt, slot, HAProxyOptions{
		Mode:         cfg.Apply,
		Caps:         hv.Caps(),
		DrainTimeout: cfg.DrainTimeout,
		Guards: GuardOptions{
			MinServers: cfg.MinServers,
			MaxRemove:  cfg.MaxRemove,
			Hold:       cfg.GuardHold,
			Force:      cfg.Force,
		},
		SingleWriter: cfg.SingleWriter || cfg.WriterBind != "",
		DryRun:       cfg.DryRun,
		DryRunOut:    stdout,
		Logger:       logger.With("component", "loop"),
		Bus:          bus,
		Board:        board,
		Metrics:      metrics,

		KeepWriterSessions: cfg.WriterFailoverSessions == config.WriterSessionsKeep,
		Writers:            fleetWriters(writers, etcd),
	})
	src, err := watch.NewEtcdSource(etcd.Client.Client, watch.Options{
		Prefixes: watchPrefixes(cfg, writers),
		Logger:   logger.With("component", "watch"),
		OnStatus: func(st watch.ConnState) { etcdStatus(board, bus, metrics, st) },
		Diagnose: etcd.Diagnose,
	})
	if err != nil {
		return configErr(err)
	}
	progress := newProgress()
	loop := NewLoop(src, target, LoopOptions{
		WaitMin:    cfg.WaitMin,
		WaitMax:    cfg.WaitMax,
		Resync:     cfg.Resync,
		Once:       cfg.Once,
		Logger:     logger.With("component", "loop"),
		Heartbeat:  progress.beat,
		OnSnapshot: func(s watch.Snapshot) { recordSnapshot(board, bus, metrics, s) },
	})
	if cfg.Listen != "" && !cfg.Once {
		page := newPage(cfg, board, bus, etcd.Client.Client, fl, logger)
		go page.Run(ctx)
		addr, err := Serve(ctx, cfg.Listen, page.Mount(Handler(board, bus, metrics)), logger)
		if err != nil {
			return err
		}
		logger.Info("serving /metrics /healthz /readyz /status /events /servers, and the page: / /live /fleet /history /stream", "listen", addr)
	}
	if !cfg.Once {
		go watchReloads(ctx, cfg, reload, target, logger.With("component", "reload"))
	}
	var fleetDone chan struct{}
	fleetCtx, stopFleet := context.WithCancel(context.WithoutCancel(ctx))
	defer stopFleet()
	if fl != nil {
		fleetDone = make(chan struct{})
		go func() {
			defer close(fleetDone)
			fl.run(fleetCtx, board, bus)
		}()
		logger.Info("publishing instance status", "instance", fl.pub.Instance(), "key", cfg.StatusPrefix+"/"+fl.pub.Instance(),
			"ttl", cfg.StatusTTL, "max_concurrent_reloads", cfg.MaxConcurrentReloads)
	}
	logger.Info("haconfd running", "prefixes", cfg.Prefixes, "output", cfg.Output, "wait", cfg.Wait, "apply", cfg.Apply, "haproxy", version)
	// systemd (Type=notify): ready once the loop runs (an etcd outage at
	// boot must not fail the unit: the last good config stays live), and
	// watchdog pings while the loop makes progress.
	wdCtx, wdStop := context.WithCancel(ctx)
	wdDone := make(chan struct{})
	go func() {
		defer close(wdDone)
		Watchdog(wdCtx, logger.With("component", "systemd"), progress.healthy)
	}()
	NotifyReady(logger)
	err = loop.Run(ctx)
	NotifyStopping(logger)
	wdStop()
	<-wdDone
	// The loop is done applying: remove the status (clean stop) and
	// revoke the lease, before etcd's client is closed.
	stopFleet()
	if fleetDone != nil {
		<-fleetDone
	}
	if cfg.StopHAProxyOnExit && !cfg.DryRun {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if serr := mgr.Stop(stopCtx); serr != nil {
			logger.Error("stopping haproxy", "err", serr)
		}
	}
	return err
}

// recordSnapshot notes a new revision from etcd (LoopOptions.OnSnapshot).
func recordSnapshot(board *Board, bus *Bus, m *Metrics, s watch.Snapshot) {
	board.Update(func(st *Status) {
		st.Revision = s.Revision
		if !st.EtcdConnected {
			st.EtcdConnected, st.EtcdSince = true, time.Now()
		}
	})
	if m != nil {
		m.SeenRev.Set(float64(s.Revision))
	}
	bus.Publish(Event{Kind: EventSnapshot, Rev: s.Revision})
}

// etcdStatus records the state of the etcd connection (watch.Options.OnStatus).
func etcdStatus(board *Board, bus *Bus, m *Metrics, st watch.ConnState) {
	board.Update(func(s *Status) {
		s.EtcdConnected = st.Connected
		s.EtcdSince = st.Since
		s.EtcdError = ""
		if st.Err != nil {
			s.EtcdError = st.Err.Error()
		}
	})
	if m != nil {
		m.EtcdConnected.Set(b2f(st.Connected))
	}
	e := Event{Kind: EventEtcd, Detail: "connected"}
	if !st.Connected {
		e.Detail = "unreachable"
		if st.Err != nil {
			e.Err = st.Err.Error()
		}
	}
	bus.Publish(e)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// progress tells the systemd watchdog whether the loop goes round: the
// loop beats at least every second while it is not stuck.
type progress struct {
	mu   sync.Mutex
	last time.Time
}

func newProgress() *progress { return &progress{last: time.Now()} }

func (p *progress) beat() {
	p.mu.Lock()
	p.last = time.Now()
	p.mu.Unlock()
}

// healthy: the loop went round within the last 10 seconds.
func (p *progress) healthy() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return time.Since(p.last) < 10*time.Second
}

// watchReloads re-reads templates (and, through reload, the settings)
// when a template, the base file or the config file changes, or on
// SIGHUP. A broken template or setting is reported and the running ones
// stay in force.
func watchReloads(ctx context.Context, cfg config.Config, reload SettingsReader, target *HAProxyTarget, logger *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	changed := make(chan []string, 1)
	files := watch.NewFiles([]string{cfg.Template, cfg.Base, cfg.ConfigFile}, 0, logger)
	go func() {
		if err := files.Run(ctx, changed); err != nil {
			logger.Warn("template and config files are not watched; SIGHUP still reloads", "err", err)
		}
	}()
	running := cfg
	for {
		var why string
		select {
		case <-ctx.Done():
			return
		case <-hup:
			why = "SIGHUP"
		case paths := <-changed:
			why = fmt.Sprintf("changed: %v", paths)
		}
		next := running
		if reload != nil {
			c, err := reload()
			if err != nil {
				for _, line := range strings.Split(err.Error(), "\n") {
					logger.Error("settings not reloaded, the running ones stay in force", "why", why, "err", line)
				}
				continue
			}
			next = c
		}
		for _, name := range restartOnly(running, next) {
			logger.Warn("setting changed; restart haconfd to apply it", "setting", name)
		}
		r, err := NewRenderer(next)
		if err != nil {
			logger.Error("templates not reloaded, the last good ones stay in force", "why", why, "err", err)
			continue
		}
		logger.Info("templates and settings reloaded", "why", why)
		target.SetRenderer(r)
		running = next
	}
}

// restartOnly names the settings that changed between a and b and that
// only a restart applies (everything but the rendering settings).
func restartOnly(a, b config.Config) []string {
	live := map[string]bool{"template": true, "base": true, "bind": true, "check-port": true, "var": true, "single-writer": true, "writer-bind": true}
	for _, k := range galeraLiveSettings {
		live[k] = true
	}
	var out []string
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for i := 0; i < va.NumField(); i++ {
		tag := va.Type().Field(i).Tag.Get("mapstructure")
		if tag == "-" || tag == "" || live[tag] {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, "--"+tag)
		}
	}
	return out
}

func masterSocket(cfg config.Config) string {
	if cfg.Supervise {
		return cfg.MasterSocket
	}
	return ""
}
