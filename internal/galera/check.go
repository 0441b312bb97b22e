package galera

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"time"
)

// DefaultCheckTimeout bounds one health check's MySQL queries.
const DefaultCheckTimeout = 2 * time.Second

// The first line of each answer is the one Percona's clustercheck sends, so
// that an "http-check expect string" written for clustercheck keeps
// matching; a second line says why.
const (
	bodySynced    = "Percona XtraDB Cluster Node is synced."
	bodyNotSynced = "Percona XtraDB Cluster Node is not synced."
	bodyReadOnly  = "Percona XtraDB Cluster Node is read-only."
	bodyDisabled  = "Percona XtraDB Cluster Node is manually disabled."
)

// CheckOptions are clustercheck's settings.
type CheckOptions struct {
	// AvailableWhenDonor: a node in wsrep_local_state 2 (Donor/Desynced)
	// answers 200 (clustercheck's available_when_donor=1).
	AvailableWhenDonor bool
	// AvailableWhenReadOnly: a node with read_only=ON answers 200 instead
	// of 503 (clustercheck's available_when_readonly=1).
	AvailableWhenReadOnly bool
	// Timeout bounds the MySQL queries of one check; 0 means
	// DefaultCheckTimeout. A check that runs out answers 503.
	Timeout time.Duration
	// DisabledFile, when set and the file exists, makes every check answer
	// 503 (clustercheck's /var/tmp/clustercheck.disabled), so an operator
	// can take a node out by hand.
	DisabledFile string
}

// Verdict is one health check's answer.
type Verdict struct {
	Code int    // http.StatusOK or http.StatusServiceUnavailable
	Body string // "<clustercheck sentence>\r\n<reason>\r\n"
}

// Evaluate is clustercheck's decision for one Status: 200 when
// wsrep_local_state is 4 (Synced), or 2 (Donor/Desynced) with
// AvailableWhenDonor; 503 otherwise, and also when read_only is ON unless
// AvailableWhenReadOnly.
func Evaluate(st Wsrep, opts CheckOptions) Verdict {
	ok := st.State == StateSynced || st.State == StateDonor && opts.AvailableWhenDonor
	if !ok {
		return verdict(http.StatusServiceUnavailable, bodyNotSynced, st.describe())
	}
	if st.ReadOnly && !opts.AvailableWhenReadOnly {
		return verdict(http.StatusServiceUnavailable, bodyReadOnly, st.describe()+", read_only ON")
	}
	return verdict(http.StatusOK, bodySynced, st.describe())
}

func verdict(code int, sentence, reason string) Verdict {
	return Verdict{Code: code, Body: sentence + "\r\n" + reason + "\r\n"}
}

// Check is the clustercheck-compatible HTTP handler. Every method (HAProxy's
// httpchk sends OPTIONS by default; GET and HEAD work too) and every path
// gets the same answer.
type Check struct {
	reader WsrepReader
	opts   CheckOptions
	logger *slog.Logger
}

// NewCheck returns the handler. A nil logger discards logs.
func NewCheck(reader WsrepReader, opts CheckOptions, logger *slog.Logger) *Check {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultCheckTimeout
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Check{reader: reader, opts: opts, logger: logger}
}

// Verdict runs one check.
func (c *Check) Verdict(ctx context.Context) Verdict {
	if c.opts.DisabledFile != "" {
		if _, err := os.Stat(c.opts.DisabledFile); err == nil {
			return verdict(http.StatusServiceUnavailable, bodyDisabled, c.opts.DisabledFile+" exists")
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	st, err := c.reader.ReadWsrep(ctx)
	if err != nil {
		reason := "MySQL error: " + oneLine(err.Error())
		if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			reason = fmt.Sprintf("MySQL did not answer within %s", c.opts.Timeout)
		}
		c.logger.Warn("health check: cannot read node status", "err", err)
		return verdict(http.StatusServiceUnavailable, bodyNotSynced, reason)
	}
	return Evaluate(st, c.opts)
}

// ServeHTTP answers like clustercheck: text/plain, Connection: close.
func (c *Check) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	v := c.Verdict(r.Context())
	h := w.Header()
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Length", strconv.Itoa(len(v.Body)))
	h.Set("Connection", "close")
	w.WriteHeader(v.Code)
	if r.Method != http.MethodHead {
		_, _ = w.Write([]byte(v.Body))
	}
}
