// Package etcdclient is haconfd's one way to reach etcd: endpoints, TLS,
// user and password, keepalive, dial timeout, reconnect backoff, the wait
// for etcd at start when credentials must be checked, and the diagnosis of
// a request that failed without saying why (a refused connection, a TLS
// handshake or certificate etcd refuses). Every command that talks to
// etcd (run, render, confd, register, status) connects through Connect.
package etcdclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/haconfd/haconfd/internal/config"
)

// ErrCredentials marks etcd refusing the user name and password (and a
// TLS setting that cannot be loaded): a configuration error, not an
// outage.
var ErrCredentials = errors.New("etcd credentials refused")

// ErrTLSFiles marks TLS files that cannot be used.
var ErrTLSFiles = errors.New("etcd TLS files unusable")

// probeTimeout bounds each diagnosis dial.
const probeTimeout = 3 * time.Second

// Client is an etcd client with what haconfd needs besides it.
type Client struct {
	*clientv3.Client
	tls          *tls.Config
	probeTimeout time.Duration
}

// TLS is the TLS configuration of the connection (nil without TLS).
func (c *Client) TLS() *tls.Config { return c.tls }

// Connect returns a client of the etcd s describes. Without credentials it
// does not wait for etcd (callers retry: an unreachable etcd is an outage
// to ride out, never an empty config); with them it fetches a token at
// once, so it waits for etcd (retrying, logging every 10th attempt) until
// ctx ends. Rejected credentials and unusable TLS files wrap
// ErrCredentials or ErrTLSFiles.
func Connect(ctx context.Context, s config.Etcd, logger *slog.Logger) (*Client, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var tlsCfg *tls.Config
	if s.EtcdCA != "" || s.EtcdCert != "" {
		info := transport.TLSInfo{TrustedCAFile: s.EtcdCA, CertFile: s.EtcdCert, KeyFile: s.EtcdKey}
		c, err := info.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrTLSFiles, err)
		}
		tlsCfg = c
	}
	ccfg := clientv3.Config{
		Endpoints:            s.EtcdEndpoints,
		DialTimeout:          s.EtcdDialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Username:             s.EtcdUsername,
		Password:             s.EtcdPassword,
		TLS:                  tlsCfg,
		Logger:               zap.NewNop(),
		// gRPC's own reconnect backoff grows to 2 minutes: after a long
		// outage etcd could be back that long before haconfd sees it.
		// Retry at least every 2 s (each try is one TCP connect).
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: s.EtcdDialTimeout,
		})},
	}
	wait := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		cli, err := clientv3.New(ccfg)
		if err == nil {
			return &Client{Client: cli, tls: tlsCfg, probeTimeout: probeTimeout}, nil
		}
		if errors.Is(err, rpctypes.ErrAuthFailed) || errors.Is(err, rpctypes.ErrGRPCAuthFailed) {
			return nil, fmt.Errorf("%w: user %s: %w", ErrCredentials, s.EtcdUsername, err)
		}
		if s.EtcdUsername == "" || ctx.Err() != nil {
			return nil, fmt.Errorf("etcd client for %v: %w", s.EtcdEndpoints, err)
		}
		if attempt == 1 || attempt%10 == 0 {
			logger.Warn("etcd unreachable, retrying; nothing is applied until it answers", "endpoints", s.EtcdEndpoints, "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("etcd client for %v: %w", s.EtcdEndpoints, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// Diagnose says why etcd did not answer when err does not: a request
// that timed out while the client waited for a connection only says
// "context deadline exceeded". It returns nil when err is an answer from
// etcd or no better reason is found.
func (c *Client) Diagnose(ctx context.Context, err error) error {
	var etcdErr rpctypes.EtcdError
	if errors.As(err, &etcdErr) || errors.Is(err, rpctypes.ErrCompacted) || ctx.Err() != nil {
		return nil
	}
	// Refused connections name the endpoints that refuse.
	if dialErr := dialEndpoints(ctx, c.Endpoints(), c.probeTimeout); dialErr != nil {
		return dialErr
	}
	if c.tls != nil {
		if tlsErr := tlsEndpoints(ctx, c.Endpoints(), c.tls, c.probeTimeout); tlsErr != nil {
			return tlsErr
		}
	}
	// Every endpoint accepts TCP: ask the client's own connection without
	// waiting for it to become ready, so that a failed TLS handshake or a
	// refused certificate is reported as such.
	err = transportError(ctx, c.Client, c.probeTimeout)
	if err != nil && hasHTTPS(c.Endpoints()) && !mentionsTLS(err.Error()) {
		// A server that refuses the client certificate after a TLS 1.3
		// handshake often shows as a broken pipe or a reset.
		return fmt.Errorf("TLS connection closed by etcd (does it accept the client certificate?): %w", err)
	}
	return err
}

func hasHTTPS(endpoints []string) bool {
	for _, ep := range endpoints {
		if strings.HasPrefix(ep, "https://") || strings.HasPrefix(ep, "unixs://") {
			return true
		}
	}
	return false
}

func mentionsTLS(s string) bool {
	s = strings.ToLower(s)
	return strings.Contains(s, "tls") || strings.Contains(s, "x509") || strings.Contains(s, "certificate")
}

// tlsEndpoints makes a TLS connection with cfg to each https endpoint and
// returns the errors of those that fail the handshake or refuse the
// client certificate.
func tlsEndpoints(ctx context.Context, endpoints []string, cfg *tls.Config, timeout time.Duration) error {
	var errs []error
	for _, ep := range endpoints {
		u, err := url.Parse(ep)
		if err != nil || u.Scheme != "https" {
			continue
		}
		c := cfg.Clone()
		if c.ServerName == "" {
			c.ServerName = u.Hostname()
		}
		c.NextProtos = []string{"h2"}
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: c}
		conn, err := d.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: TLS handshake: %w", ep, err))
			continue
		}
		// With TLS 1.3 the server judges the client certificate after the
		// client finished its handshake: a refusal is an alert on the
		// first read. An accepted client gets HTTP/2 settings or nothing.
		_ = conn.SetReadDeadline(time.Now().Add(min(timeout, time.Second)))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
		var ne net.Error
		if err != nil && !(errors.As(err, &ne) && ne.Timeout()) && mentionsTLS(err.Error()) {
			errs = append(errs, fmt.Errorf("%s: TLS: %w", ep, err))
		}
	}
	return errors.Join(errs...)
}

// transportError returns why the client's connection to etcd is down, as
// gRPC reports it, or nil if a request goes through or nothing is known.
func transportError(ctx context.Context, cli *clientv3.Client, timeout time.Duration) error {
	conn := cli.ActiveConnection()
	if conn == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn.Connect()
	_, err := pb.NewMaintenanceClient(conn).Status(ctx, &pb.StatusRequest{}, grpc.WaitForReady(false))
	if err == nil || ctx.Err() != nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable {
		return nil
	}
	return errors.New(st.Message())
}

// dialEndpoints tries a TCP connection to each endpoint and returns the
// errors of those that refuse one, nil when all accept (or none can be
// dialled plainly, such as unix sockets).
func dialEndpoints(ctx context.Context, endpoints []string, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout}
	var errs []error
	for _, ep := range endpoints {
		host := ep
		if u, err := url.Parse(ep); err == nil && u.Host != "" {
			if u.Scheme == "unix" || u.Scheme == "unixs" {
				continue
			}
			host = u.Host
		}
		if _, _, err := net.SplitHostPort(host); err != nil {
			continue
		}
		conn, err := d.DialContext(ctx, "tcp", host)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		conn.Close()
	}
	return errors.Join(errs...)
}
