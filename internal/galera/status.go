// Package galera is haconfd's node-side toolkit for MariaDB/MySQL Galera
// clusters: a registrar that keeps one node's registration (and its Galera
// state) alive in etcd, a clustercheck-compatible HTTP health check for
// HAProxy's "option httpchk", and the single-writer choice shared by every
// load balancer.
package galera

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/haconfd/haconfd/render/node"
)

// Galera's wsrep_local_state values.
const (
	StateUnknown  = -1 // wsrep_local_state absent (not a Galera node, wsrep off)
	StateJoining  = 1
	StateDonor    = 2 // Donor/Desynced
	StateJoined   = 3
	StateSynced   = 4
	stateComment4 = node.StateSynced
)

// StateUnreachable is the state the registrar publishes while MySQL does
// not answer. It is not a Galera state: haconfd drains every node whose
// state is not "Synced", so a node whose database is down or hung is
// drained (kept in the config) until MySQL answers again.
const StateUnreachable = "Unreachable"

// Wsrep is what a node's MySQL says about itself.
type Wsrep struct {
	State    int    // wsrep_local_state, StateUnknown when absent
	Comment  string // wsrep_local_state_comment, "" when absent
	Index    int    // wsrep_local_index, -1 when absent
	ReadOnly bool   // @@global.read_only

	// The other signals haconfd routes on, as MySQL spells them ("" when
	// absent: pxc_maint_mode exists only on Percona XtraDB Cluster).
	Ready               string // status wsrep_ready: ON/OFF
	ClusterStatus       string // status wsrep_cluster_status: Primary, non-Primary, Disconnected
	RecvQueue           string // status wsrep_local_recv_queue
	FlowControlPaused   string // status wsrep_flow_control_paused
	Desync              string // variable wsrep_desync: ON/OFF
	RejectQueries       string // variable wsrep_reject_queries: NONE, ALL, ALL_KILL
	DonorRejectsQueries string // variable wsrep_sst_donor_rejects_queries: ON/OFF
	MaintMode           string // variable pxc_maint_mode: DISABLED, SHUTDOWN, MAINTENANCE
}

// WsrepReader reads a node's Status. It must honour ctx's deadline.
type WsrepReader interface {
	ReadWsrep(ctx context.Context) (Wsrep, error)
}

// ErrInvalidDSN is wrapped by NewMySQLReader's error for a DSN that
// go-sql-driver/mysql cannot parse.
var ErrInvalidDSN = errors.New("invalid MySQL DSN")

// MySQLReader reads Wsrep from a MySQL/MariaDB server with
// go-sql-driver/mysql.
type MySQLReader struct {
	db *sql.DB
}

// NewMySQLReader opens (lazily: nothing is dialled yet) a small pool to the
// server named by dsn ("user:pass@tcp(127.0.0.1:3306)/" or
// "user:pass@unix(/run/mysqld/mysqld.sock)/"). timeout bounds dialling,
// reads and writes on the connection. The error never contains the DSN
// (it may hold a password).
//
// The driver's own messages (a broken connection, ...) go to logger, at
// warn level, so they follow --log-format like every other line; nil
// discards them.
func NewMySQLReader(dsn string, timeout time.Duration, logger *slog.Logger) (*MySQLReader, error) {
	if strings.TrimSpace(dsn) == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidDSN)
	}
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidDSN, err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.Logger = driverLogger{logger.With("component", "mysql")}
	if timeout > 0 {
		cfg.Timeout = timeout
		cfg.ReadTimeout = timeout
		cfg.WriteTimeout = timeout
	}
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidDSN, err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(2)
	// A new connection for every read: a MySQL that is shutting down
	// refuses it at once (it closes its listeners first), while an idle
	// pooled connection would answer until the server kills it, ~1 s
	// later. Over the unix socket a connection costs well under 1 ms.
	db.SetMaxIdleConns(-1)
	return &MySQLReader{db: db}, nil
}

// driverLogger passes go-sql-driver/mysql's messages to slog.
type driverLogger struct{ l *slog.Logger }

func (d driverLogger) Print(v ...any) { d.l.Warn(strings.TrimSpace(fmt.Sprint(v...))) }

// Close closes the pool.
func (m *MySQLReader) Close() error { return m.db.Close() }

// ReadWsrep reads the wsrep status variables and the variables haconfd
// routes on, on one new connection: SHOW GLOBAL STATUS and SHOW GLOBAL
// VARIABLES (the SHOW forms work on MariaDB, MySQL and Percona alike).
func (m *MySQLReader) ReadWsrep(ctx context.Context) (Wsrep, error) {
	st := Wsrep{State: StateUnknown, Index: -1}
	conn, err := m.db.Conn(ctx)
	if err != nil {
		return st, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	err = readPairs(ctx, conn, "SHOW GLOBAL STATUS WHERE Variable_name IN "+
		"('wsrep_local_state','wsrep_local_state_comment','wsrep_local_index','wsrep_ready',"+
		"'wsrep_cluster_status','wsrep_local_recv_queue','wsrep_flow_control_paused')", func(name, value string) {
		switch name {
		case "wsrep_local_state":
			if n, err := strconv.Atoi(value); err == nil {
				st.State = n
			}
		case "wsrep_local_state_comment":
			st.Comment = value
		case "wsrep_local_index":
			if n, err := strconv.Atoi(value); err == nil && n >= 0 {
				st.Index = n
			}
		case "wsrep_ready":
			st.Ready = value
		case "wsrep_cluster_status":
			st.ClusterStatus = value
		case "wsrep_local_recv_queue":
			st.RecvQueue = value
		case "wsrep_flow_control_paused":
			st.FlowControlPaused = value
		}
	})
	if err != nil {
		return st, fmt.Errorf("read wsrep status: %w", err)
	}
	err = readPairs(ctx, conn, "SHOW GLOBAL VARIABLES WHERE Variable_name IN "+
		"('read_only','wsrep_desync','wsrep_reject_queries','wsrep_sst_donor_rejects_queries','pxc_maint_mode')", func(name, value string) {
		switch name {
		case "read_only":
			st.ReadOnly = value == "1" || strings.EqualFold(value, "ON")
		case "wsrep_desync":
			st.Desync = value
		case "wsrep_reject_queries":
			st.RejectQueries = value
		case "wsrep_sst_donor_rejects_queries":
			st.DonorRejectsQueries = value
		case "pxc_maint_mode":
			st.MaintMode = value
		}
	})
	if err != nil {
		return st, fmt.Errorf("read variables: %w", err)
	}
	return st, nil
}

// readPairs runs a SHOW that returns (Variable_name, Value) rows.
func readPairs(ctx context.Context, conn *sql.Conn, query string, f func(name, value string)) error {
	rows, err := conn.QueryContext(ctx, query)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return err
		}
		f(strings.ToLower(name), value)
	}
	return rows.Err()
}

// stateName is Galera's comment for a wsrep_local_state value, used when a
// server reports no (or an unusable) comment.
func stateName(state int) string {
	switch state {
	case StateJoining:
		return "Joining"
	case StateDonor:
		return "Donor/Desynced"
	case StateJoined:
		return "Joined"
	case StateSynced:
		return stateComment4
	case 0:
		return "Initialized"
	case StateUnknown:
		return "Unknown"
	}
	return "State-" + strconv.Itoa(state)
}

// describe is "wsrep_local_state 2 (Donor/Desynced)" for bodies and logs.
func (s Wsrep) describe() string {
	if s.State == StateUnknown {
		return "wsrep_local_state not reported (is wsrep on?)"
	}
	c := s.Comment
	if c == "" {
		c = stateName(s.State)
	}
	return fmt.Sprintf("wsrep_local_state %d (%s)", s.State, oneLine(c))
}

// oneLine keeps the first line of s, without control characters, at most
// 200 bytes: safe to put in an HTTP body or a log value.
func oneLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
