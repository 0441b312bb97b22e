// Package fleet lets many haconfd instances that watch one etcd see each
// other: each publishes its status under a prefix on a lease (Publisher),
// reloads are staggered with an etcd semaphore and stopped fleet-wide when
// one instance fails a change (Stagger), and ReadAll tells an operator
// which instances are converged, lagging, failing or gone.
//
// Keys, for a status prefix P (default /haconfd/instances):
//
//	P/<instance>              status JSON, on the instance's lease (TTL)
//	P.last-seen/<instance>    the same JSON without a lease: outlives the
//	                          instance, so that ReadAll can say "gone"
//	P.reload-lock/<slot>/...  concurrency.Mutex keys, one mutex per slot
//
// A clean stop deletes both status keys and revokes the lease; an instance
// that dies keeps its last-seen key (delete it with etcdctl to forget it).
package fleet

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Results of Status.LastResult.
const (
	ResultOK    = "ok"
	ResultError = "error"
	ResultHeld  = "held"
)

// maxReloads is how many reload records a Report keeps.
const maxReloads = 16

// Report is what one instance publishes.
type Report struct {
	Instance        string    `json:"instance"`
	Prefixes        []string  `json:"prefixes"`         // the watched prefixes
	AppliedRevision int64     `json:"applied_revision"` // revision of the snapshot the live config was rendered from
	SeenRevision    int64     `json:"seen_revision"`    // newest revision the instance has seen
	BehindSince     time.Time `json:"behind_since,omitzero"`
	ConfigSHA256    string    `json:"config_sha256"` // of the live config
	LastResult      string    `json:"last_result"`   // ok, error or held
	LastError       string    `json:"last_error,omitempty"`
	Held            string    `json:"held,omitempty"` // why the newest render is held back (guard, wave stopped)
	Method          string    `json:"method"`         // how the last config went live: start, reload, runtime
	LastApply       time.Time `json:"last_apply,omitzero"`
	HAProxyVersion  string    `json:"haproxy_version"`
	HAProxyPID      int       `json:"haproxy_pid"`
	Waiting         string    `json:"waiting,omitempty"` // waiting for a reload slot, and since when

	// FailedChange is the change (data digest) whose start or reload
	// failed here, until a later one succeeds: other instances refuse to
	// reload that change (the wave stops).
	FailedChange       string `json:"failed_change,omitempty"`
	FailedConfigSHA256 string `json:"failed_config_sha256,omitempty"`
	FailedError        string `json:"failed_error,omitempty"`

	Reloads []Reload  `json:"reloads"` // the newest starts and reloads, oldest first
	Started time.Time `json:"started"` // when this haconfd started
	Updated time.Time `json:"updated"` // when this status was published
}

// Reload is one start or reload of HAProxy by an instance.
type Reload struct {
	Action       string    `json:"action"` // start or reload
	Change       string    `json:"change"` // digest of the watched keys it was rendered from
	ConfigSHA256 string    `json:"config_sha256"`
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished,omitzero"` // zero while in progress
	OK           bool      `json:"ok"`
	Error        string    `json:"error,omitempty"`
	Coordinated  bool      `json:"coordinated"` // it held a reload slot
}

func (s Report) clone() Report {
	s.Prefixes = slices.Clone(s.Prefixes)
	s.Reloads = slices.Clone(s.Reloads)
	return s
}

// ErrWaveStopped is matched (errors.Is) by *WaveStoppedError.
var ErrWaveStopped = errors.New("wave stopped")

// WaveStoppedError says that another instance failed to start or reload
// the same change, so this one keeps its last good config.
type WaveStoppedError struct {
	Instance string // the instance whose reload failed
	Reason   string // its error
}

func (e *WaveStoppedError) Error() string {
	return fmt.Sprintf("wave stopped: instance %s failed to reload this config: %s", e.Instance, e.Reason)
}

// Is makes errors.Is(err, ErrWaveStopped) true.
func (e *WaveStoppedError) Is(target error) bool { return target == ErrWaveStopped }

// Digest names a state of the watched keys: the sha256 of the sorted
// key/value pairs. Instances that watch the same keys compute the same
// digest whatever their revision numbers or local template variables, so
// it names one change fleet-wide.
func Digest(kvs map[string]string) string {
	keys := make([]string, 0, len(kvs))
	for k := range kvs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	h := sha256.New()
	for _, k := range keys {
		h.Write([]byte(k))
		h.Write([]byte{0})
		h.Write([]byte(kvs[k]))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// SHA256 is the hex sha256 of b (the config_sha256 of a config).
func SHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// CheckInstance says whether name can name an instance (a key segment).
func CheckInstance(name string) error {
	switch {
	case name == "":
		return errors.New("must not be empty")
	case len(name) > 253:
		return fmt.Errorf("%q is longer than 253 bytes", name)
	}
	for _, r := range name {
		if r <= ' ' || r == '/' || r == 0x7f {
			return fmt.Errorf("%q: no slashes, spaces or control characters", name)
		}
	}
	return nil
}

// CheckPrefix says whether p can be a status prefix: it starts with /,
// has no trailing / and no spaces.
func CheckPrefix(p string) error {
	if !strings.HasPrefix(p, "/") || len(p) < 2 || strings.HasSuffix(p, "/") || strings.ContainsAny(p, " \t\r\n") {
		return fmt.Errorf("%q must start with /, name something below it, and have no trailing / or spaces", p)
	}
	return nil
}

// Overlaps says whether the keys under status prefix p (p/, p.last-seen/,
// p.reload-lock/) and the keys watched under prefix w meet: publishing a
// status would then trigger a render on every instance.
func Overlaps(p, w string) bool {
	return p == w || strings.HasPrefix(p, w+"/") || strings.HasPrefix(w, p+"/") || strings.HasPrefix(w, p+".")
}

func statusKey(prefix, instance string) string { return prefix + "/" + instance }
func seenKey(prefix, instance string) string   { return prefix + ".last-seen/" + instance }
func lockPrefix(prefix string, slot int) string {
	return fmt.Sprintf("%s.reload-lock/%d", prefix, slot)
}
