package haproxy

import (
	"bytes"
	"context"
	"errors"
	"os"
	"slices"
	"sync"
	"testing"
)

// hookLog records the calls of Options.BeforeReload and of its done.
type hookLog struct {
	mu     sync.Mutex
	calls  []Action
	dones  []bool
	refuse error // returned by the hook when set
}

func (h *hookLog) hook(_ context.Context, action Action, _ []byte) (func(bool, error), error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, action)
	if h.refuse != nil {
		return nil, h.refuse
	}
	return func(ok bool, err error) {
		h.mu.Lock()
		defer h.mu.Unlock()
		if ok != (err == nil) {
			panic("done: ok and err disagree")
		}
		h.dones = append(h.dones, ok)
	}, nil
}

func (h *hookLog) got() ([]Action, []bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls), slices.Clone(h.dones)
}

// BeforeReload is called for a start and a reload (also a runtime change
// that falls back to one), never for a runtime change; its error holds
// the apply with the live file untouched; done gets the outcome.
func TestFleetBeforeReloadHook(t *testing.T) {
	h := &hookLog{}
	s := newRuntimeSite(t, func(o *Options) { o.BeforeReload = h.hook })
	a, b := startBackend(t, "a"), startBackend(t, "b")
	front := freePort(t)

	steps := []struct {
		name      string
		cfg       []byte
		refuse    error
		want      Action
		wantCalls []Action
		wantDones []bool
		wantErr   error
	}{
		{"start", s.rtConfig(front, "roundrobin", rtServer{"a", a.port, ""}), nil, ActionStart,
			[]Action{ActionStart}, []bool{true}, nil},
		{"runtime change: no hook", s.rtConfig(front, "roundrobin", rtServer{"a", a.port, ""}, rtServer{"b", b.port, ""}), nil, ActionRuntime,
			[]Action{ActionStart}, []bool{true}, nil},
		{"structural change refused", s.rtConfig(front, "leastconn", rtServer{"a", a.port, ""}, rtServer{"b", b.port, ""}), errors.New("wave stopped"), ActionNone,
			[]Action{ActionStart, ActionReload}, []bool{true}, ErrReloadHeld},
		{"structural change allowed", s.rtConfig(front, "leastconn", rtServer{"a", a.port, ""}, rtServer{"b", b.port, ""}), nil, ActionReload,
			[]Action{ActionStart, ActionReload, ActionReload}, []bool{true, true}, nil},
		{"failed reload: done(false)", bytes.Replace(s.rtConfig(front, "leastconn", rtServer{"a", a.port, ""}), []byte("global\n"), []byte("global\n    chroot /nonexistent-dir\n"), 1), nil, ActionReload,
			[]Action{ActionStart, ActionReload, ActionReload, ActionReload}, []bool{true, true, false}, ErrStartFailed},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			before, _ := os.ReadFile(s.cfg) // none before the first start
			h.mu.Lock()
			h.refuse = st.refuse
			h.mu.Unlock()
			res, err := s.m.Apply(t.Context(), st.cfg)
			if st.wantErr != nil {
				mustErrorIs(t, err, st.wantErr)
				if st.refuse != nil && !errors.Is(err, st.refuse) {
					t.Errorf("error %v does not wrap the hook's error", err)
				}
				if !bytes.Equal(readFile(t, s.cfg), before) {
					t.Error("live file changed by a held or failed apply")
				}
			} else if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if res.Action != st.want {
				t.Errorf("action = %s, want %s", res.Action, st.want)
			}
			calls, dones := h.got()
			if !slices.Equal(calls, st.wantCalls) || !slices.Equal(dones, st.wantDones) {
				t.Errorf("hook calls %v dones %v, want %v %v", calls, dones, st.wantCalls, st.wantDones)
			}
		})
	}
	if got, err := dial(front); err != nil || (got != "a" && got != "b") {
		t.Errorf("after the failed reload the last good config should serve: %q, %v", got, err)
	}
}
