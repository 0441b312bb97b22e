package galera

import (
	"context"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeStatus is a WsrepReader whose answer the test sets.
type fakeStatus struct {
	mu  sync.Mutex
	st  Wsrep
	err error
	// block, when true, makes ReadStatus wait for ctx to end.
	block bool
}

func (f *fakeStatus) set(st Wsrep, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st, f.err = st, err
}

func (f *fakeStatus) ReadWsrep(ctx context.Context) (Wsrep, error) {
	f.mu.Lock()
	st, err, block := f.st, f.err, f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return Wsrep{}, ctx.Err()
	}
	return st, err
}
