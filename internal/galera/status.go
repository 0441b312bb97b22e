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
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(time.Minute)
	return &MySQLReader{db: db}, nil
}

// driverLogger passes go-sql-driver/mysql's messages to slog.
type driverLogger struct{ l *slog.Logger }

func (d driverLogger) Print(v ...any) { d.l.Warn(strings.TrimSpace(fmt.Sprint(v...))) }

// Close closes the pool.
func (m *MySQLReader) Close() error { return m.db.Close() }

// ReadStatus runs SHOW GLOBAL STATUS for the three wsrep variables and
// reads @@global.read_only.
func (m *MySQLReader) ReadWsrep(ctx context.Context) (Wsrep, error) {
	st := Wsrep{State: StateUnknown, Index: -1}
	rows, err := m.db.QueryContext(ctx, "SHOW GLOBAL STATUS WHERE Variable_name IN "+
		"('wsrep_local_state','wsrep_local_state_comment','wsrep_local_index')")
	if err != nil {
		return st, fmt.Errorf("query wsrep status: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return st, fmt.Errorf("read wsrep status: %w", err)
		}
		switch strings.ToLower(name) {
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
		}
	}
	if err := rows.Err(); err != nil {
		return st, fmt.Errorf("read wsrep status: %w", err)
	}
	var ro string
	if err := m.db.QueryRowContext(ctx, "SELECT @@global.read_only").Scan(&ro); err != nil {
		return st, fmt.Errorf("query read_only: %w", err)
	}
	st.ReadOnly = ro == "1" || strings.EqualFold(ro, "ON")
	return st, nil
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
