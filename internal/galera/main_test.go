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

// fakeStatus is a StatusReader whose answer the test sets.
type fakeStatus struct {
	mu  sync.Mutex
	st  Status
	err error
	// block, when true, makes ReadStatus wait for ctx to end.
	block bool
}

func (f *fakeStatus) set(st Status, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st, f.err = st, err
}

func (f *fakeStatus) ReadStatus(ctx context.Context) (Status, error) {
	f.mu.Lock()
	st, err, block := f.st, f.err, f.block
	f.mu.Unlock()
	if block {
		<-ctx.Done()
		return Status{}, ctx.Err()
	}
	return st, err
}
