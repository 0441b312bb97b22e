// Package etcdserver runs an in-process etcd (go.etcd.io/etcd/server/v3/embed)
// for `haconfd run --embedded-etcd`, for tests and for end-to-end tests.
package etcdserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
)

// ErrInvalidOptions is wrapped by every error Start returns for bad Options.
var ErrInvalidOptions = errors.New("invalid etcd server options")

// ErrNotReady is wrapped by the error Start returns when etcd does not
// become ready within the start timeout.
var ErrNotReady = errors.New("etcd server not ready")

// startTimeout bounds how long Start waits for etcd to become ready when
// the context given to Start has no earlier deadline.
const startTimeout = 60 * time.Second

// PKI names the PEM files of a certificate authority: a CA, a server
// certificate for 127.0.0.1, ::1 and localhost, and a client certificate,
// both signed by the CA (internal/etcdtest makes throwaway ones).
type PKI struct {
	CAFile         string
	ServerCertFile string
	ServerKeyFile  string
	ClientCertFile string
	ClientKeyFile  string
}

// Options configures an in-process etcd member.
type Options struct {
	// Dir is the data directory (required). An existing directory is
	// reused, so a server can be stopped and started again on it.
	Dir string
	// ClientURL is the URL clients connect to, e.g. "http://127.0.0.1:2379".
	// Empty means http://127.0.0.1 on a free port chosen by the kernel.
	ClientURL string
	// Logger receives etcd's warnings and errors. Nil silences etcd.
	Logger *slog.Logger
	// TLS, if set, makes etcd serve clients over https only, with
	// TLS.ServerCertFile and TLS.ServerKeyFile, and require a client
	// certificate signed by TLS.CAFile. ClientURL must then be https.
	// Server.Client presents TLS.ClientCertFile.
	TLS *PKI
	// Auth, if set, turns on etcd authentication once the server is
	// ready: a root user and the given users are created first. A server
	// restarted on a data directory where auth is on is left as it is.
	Auth *Auth
}

// Auth describes the users of an etcd with authentication on.
type Auth struct {
	// RootPassword is the password of the user "root" (required).
	RootPassword string
	// Users are created with a role of the same name.
	Users []User
}

// User is an etcd user whose role may read one key prefix.
type User struct {
	Name     string
	Password string
	// ReadPrefix is the key prefix the user may read (required).
	ReadPrefix string
}

// RootUser is the name of etcd's administrator user.
const RootUser = "root"

// Member holds what only a cluster of members (tests, chaos runs) sets:
// membership and durability trade-offs. The zero Member is a single
// member that fsyncs, as --embedded-etcd runs.
type Member struct {
	Name           string
	PeerURL        string // empty: a free port on 127.0.0.1
	InitialCluster string // empty: this member alone
	Existing       bool   // join as ClusterStateFlagExisting
	NoFsync        bool
	TickMs         uint
	ElectionMs     uint
}

// memberConfig is Member inside this package.
type memberConfig = Member

// Server is a running in-process etcd member.
type Server struct {
	etcd      *embed.Etcd
	dir       string
	endpoints []string
	peerURL   string
	logger    *slog.Logger
	tls       *PKI
	auth      *Auth
	closeOnce sync.Once
}

// Start starts an etcd member and waits until it is ready to serve clients,
// at most until ctx is done or a bounded start timeout passes.
func Start(ctx context.Context, opts Options) (*Server, error) {
	return start(ctx, opts, memberConfig{})
}

// StartMember is Start for a member of a cluster, or with fsync off.
func StartMember(ctx context.Context, opts Options, m Member) (*Server, error) {
	return start(ctx, opts, m)
}

func start(ctx context.Context, opts Options, mc memberConfig) (*Server, error) {
	if strings.TrimSpace(opts.Dir) == "" {
		return nil, fmt.Errorf("etcd data dir: %w: must not be empty", ErrInvalidOptions)
	}
	if err := checkSecurity(opts); err != nil {
		return nil, err
	}
	if opts.ClientURL != "" {
		if _, err := parseListenURL(opts.ClientURL, clientScheme(opts)); err != nil {
			return nil, fmt.Errorf("etcd client URL %q: %w: %w", opts.ClientURL, ErrInvalidOptions, err)
		}
	}
	if mc.PeerURL != "" {
		if _, err := parseListenURL(mc.PeerURL, "http"); err != nil {
			return nil, fmt.Errorf("etcd peer URL %q: %w: %w", mc.PeerURL, ErrInvalidOptions, err)
		}
	}
	// A port picked by listening on :0 and closing again may be taken by
	// someone else before etcd binds it; try again with new ports then.
	var lastErr error
	for range 5 {
		s, err := startOnce(ctx, opts, mc)
		if err == nil {
			return s, nil
		}
		lastErr = err
		pickedPorts := opts.ClientURL == "" || mc.PeerURL == ""
		if !pickedPorts || !errors.Is(err, syscall.EADDRINUSE) || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func startOnce(ctx context.Context, opts Options, mc memberConfig) (*Server, error) {
	clientURL := opts.ClientURL
	if clientURL == "" {
		u, err := freeURL()
		if err != nil {
			return nil, err
		}
		clientURL = clientScheme(opts) + strings.TrimPrefix(u, "http")
	}
	peerURL := mc.PeerURL
	if peerURL == "" {
		u, err := freeURL()
		if err != nil {
			return nil, err
		}
		peerURL = u
	}
	cu, err := parseListenURL(clientURL, clientScheme(opts))
	if err != nil {
		return nil, fmt.Errorf("etcd client URL %q: %w: %w", clientURL, ErrInvalidOptions, err)
	}
	pu, err := parseListenURL(peerURL, "http")
	if err != nil {
		return nil, fmt.Errorf("etcd peer URL %q: %w: %w", peerURL, ErrInvalidOptions, err)
	}

	cfg := embed.NewConfig()
	cfg.Name = "haconfd"
	if mc.Name != "" {
		cfg.Name = mc.Name
	}
	cfg.Dir = opts.Dir
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = mc.InitialCluster
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	}
	cfg.InitialClusterToken = "haconfd"
	if mc.Existing {
		cfg.ClusterState = embed.ClusterStateFlagExisting
	}
	// Shorter than etcd's 100ms/1s defaults: a member on this machine
	// becomes leader (and ready) in tens of milliseconds instead of ~1s.
	cfg.TickMs, cfg.ElectionMs = 50, 500
	if mc.TickMs != 0 {
		cfg.TickMs, cfg.ElectionMs = mc.TickMs, mc.ElectionMs
	}
	if opts.TLS != nil {
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile:       opts.TLS.ServerCertFile,
			KeyFile:        opts.TLS.ServerKeyFile,
			TrustedCAFile:  opts.TLS.CAFile,
			ClientCertAuth: true,
		}
	}
	cfg.UnsafeNoFsync = mc.NoFsync
	cfg.EnableGRPCGateway = false
	cfg.LogLevel = "error"
	if opts.Logger != nil {
		cfg.LogLevel = "warn"
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newZapLogger(opts.Logger))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start etcd in %s on %s: %w", opts.Dir, clientURL, err)
	}

	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("start etcd in %s on %s: %w", opts.Dir, clientURL, err)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("start etcd in %s on %s: %w: %w", opts.Dir, clientURL, ErrNotReady, ctx.Err())
	}
	s := &Server{
		etcd:      e,
		dir:       opts.Dir,
		endpoints: []string{cu.String()},
		peerURL:   pu.String(),
		logger:    opts.Logger,
		tls:       opts.TLS,
		auth:      opts.Auth,
	}
	if opts.Auth != nil && !e.Server.AuthStore().IsAuthEnabled() {
		if err := s.enableAuth(ctx); err != nil {
			s.Close()
			return nil, fmt.Errorf("start etcd in %s on %s: %w", opts.Dir, clientURL, err)
		}
	}
	return s, nil
}

func clientScheme(opts Options) string {
	if opts.TLS != nil {
		return "https"
	}
	return "http"
}

func checkSecurity(opts Options) error {
	if p := opts.TLS; p != nil {
		for name, f := range map[string]string{
			"CA": p.CAFile, "server certificate": p.ServerCertFile, "server key": p.ServerKeyFile,
		} {
			if f == "" {
				return fmt.Errorf("etcd TLS %s: %w: file name is empty", name, ErrInvalidOptions)
			}
		}
	}
	if a := opts.Auth; a != nil {
		if a.RootPassword == "" {
			return fmt.Errorf("etcd auth root password: %w: must not be empty", ErrInvalidOptions)
		}
		for i, u := range a.Users {
			switch {
			case u.Name == "" || u.Name == RootUser:
				return fmt.Errorf("etcd auth user #%d %q: %w: name must be set and not %q", i+1, u.Name, ErrInvalidOptions, RootUser)
			case u.Password == "":
				return fmt.Errorf("etcd auth user %q: %w: password must not be empty", u.Name, ErrInvalidOptions)
			case u.ReadPrefix == "":
				return fmt.Errorf("etcd auth user %q: %w: read prefix must not be empty", u.Name, ErrInvalidOptions)
			}
		}
	}
	return nil
}

// enableAuth creates root and the users, each with a role that may read
// its prefix, then turns authentication on.
func (s *Server) enableAuth(ctx context.Context) error {
	cli, err := s.Client()
	if err != nil {
		return fmt.Errorf("enable auth: %w", err)
	}
	defer cli.Close()
	if _, err := cli.UserAdd(ctx, RootUser, s.auth.RootPassword); err != nil {
		return fmt.Errorf("enable auth: add user %s: %w", RootUser, err)
	}
	if _, err := cli.UserGrantRole(ctx, RootUser, "root"); err != nil {
		return fmt.Errorf("enable auth: grant role root: %w", err)
	}
	for _, u := range s.auth.Users {
		if _, err := cli.RoleAdd(ctx, u.Name); err != nil {
			return fmt.Errorf("enable auth: add role %s: %w", u.Name, err)
		}
		_, err := cli.RoleGrantPermission(ctx, u.Name, u.ReadPrefix, clientv3.GetPrefixRangeEnd(u.ReadPrefix),
			clientv3.PermissionType(clientv3.PermRead))
		if err != nil {
			return fmt.Errorf("enable auth: let role %s read %s: %w", u.Name, u.ReadPrefix, err)
		}
		if _, err := cli.UserAdd(ctx, u.Name, u.Password); err != nil {
			return fmt.Errorf("enable auth: add user %s: %w", u.Name, err)
		}
		if _, err := cli.UserGrantRole(ctx, u.Name, u.Name); err != nil {
			return fmt.Errorf("enable auth: grant role %s: %w", u.Name, err)
		}
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		return fmt.Errorf("enable auth: %w", err)
	}
	return nil
}

// Endpoints returns the client URLs of the server.
func (s *Server) Endpoints() []string {
	return append([]string(nil), s.endpoints...)
}

// Dir returns the data directory of the server.
func (s *Server) Dir() string { return s.dir }

// Client returns a new client connected to the server, as root when auth
// is on and with the client certificate when TLS is; the caller closes it.
func (s *Server) Client() (*clientv3.Client, error) {
	cfg, err := s.ClientConfig()
	if err != nil {
		return nil, err
	}
	return newClientWith(cfg)
}

// ClientConfig returns the client configuration Client uses.
func (s *Server) ClientConfig() (clientv3.Config, error) {
	return clientConfig(s.endpoints, s.logger, s.tls, s.auth)
}

// IsLeader reports whether this member is the raft leader.
func (s *Server) IsLeader() bool {
	return s.etcd.Server.Leader() == s.etcd.Server.MemberID()
}

// Close stops the server. It is safe to call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.etcd.Close()
	})
}

func newClient(endpoints []string, l *slog.Logger) (*clientv3.Client, error) {
	cfg, err := clientConfig(endpoints, l, nil, nil)
	if err != nil {
		return nil, err
	}
	return newClientWith(cfg)
}

func clientConfig(endpoints []string, l *slog.Logger, p *PKI, a *Auth) (clientv3.Config, error) {
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Logger:      newZapLogger(l),
	}
	if p != nil {
		info := transport.TLSInfo{TrustedCAFile: p.CAFile, CertFile: p.ClientCertFile, KeyFile: p.ClientKeyFile}
		c, err := info.ClientConfig()
		if err != nil {
			return clientv3.Config{}, fmt.Errorf("etcd client TLS: %w", err)
		}
		cfg.TLS = c
	}
	if a != nil {
		cfg.Username, cfg.Password = RootUser, a.RootPassword
	}
	return cfg, nil
}

func newClientWith(cfg clientv3.Config) (*clientv3.Client, error) {
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return cli, nil
}

// parseListenURL checks that raw is a URL with the given scheme, an IP
// host and a port, as etcd needs to bind it.
func parseListenURL(raw, scheme string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != scheme {
		return nil, fmt.Errorf("scheme must be %s, got %q", scheme, u.Scheme)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("must be %s://IP:PORT with no path, query or user", scheme)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, fmt.Errorf("want %s://IP:PORT: %w", scheme, err)
	}
	if net.ParseIP(host) == nil {
		return nil, fmt.Errorf("host %q is not an IP address", host)
	}
	if port == "" || port == "0" {
		return nil, errors.New("port must be set and not 0")
	}
	u.Path = ""
	return u, nil
}

// freeURL returns http://127.0.0.1:PORT with a port the kernel just handed
// out.
func freeURL() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	return "http://" + addr, nil
}
