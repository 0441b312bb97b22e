package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/etcdserver"
	"github.com/haconfd/haconfd/internal/fleet"
	"github.com/haconfd/haconfd/render"
	"github.com/haconfd/haconfd/watch"
)

const (
	fleetInstances = 50
	fleetNodes     = 1000
	fleetReps      = 10
	fleetStatus    = "/haconfd/instances"
)

// rpcCount counts what the instances' etcd clients send: unary calls
// (Range, Put, Txn, LeaseGrant, ...) and messages on streams (watch
// create/progress requests, lease keepalives).
type rpcCount struct{ unary, streamMsgs atomic.Int64 }

func (c *rpcCount) total() int64 { return c.unary.Load() + c.streamMsgs.Load() }

type countingStream struct {
	grpc.ClientStream
	c *rpcCount
}

func (s countingStream) SendMsg(m any) error {
	s.c.streamMsgs.Add(1)
	return s.ClientStream.SendMsg(m)
}

func (c *rpcCount) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			c.unary.Add(1)
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			s, err := streamer(ctx, desc, cc, method, opts...)
			if err != nil {
				return nil, err
			}
			return countingStream{s, c}, nil
		}),
	}
}

// benchInstance is the watch + render + plan + status part of one haconfd.
type benchInstance struct {
	rendered  atomic.Int64 // revision of the last snapshot rendered and planned
	published atomic.Int64 // revision of the last status put into etcd
}

// fleetBench: 50 instances (their watch, render, plan and status
// publishing, in process, each with its own etcd client) on one etcd
// with 1,000 nodes. Put → all 50 rendered and planned, and → all 50
// published the applied revision; etcd requests/s from the fleet while
// changing and idle; `haconfd status` (ReadAll) over the 50.
func fleetBench() ([]string, error) {
	dir, err := os.MkdirTemp("", "hcbench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	srv, err := etcdserver.Start(context.Background(), etcdserver.Options{Dir: filepath.Join(dir, "etcd")})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	admin, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var loaded int64 // revision of the last change under the prefix
	for i := 0; i < fleetNodes; i += 100 {
		var ops []clientv3.Op
		for j := i; j < i+100; j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s/node%04d", prefix, j), fmt.Sprintf("10.1.%d.%d:3306", j/250, j%250+1)))
		}
		resp, err := admin.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, err
		}
		loaded = resp.Header.Revision
	}

	var count rpcCount
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	insts := make([]*benchInstance, fleetInstances)
	errs := make(chan error, fleetInstances)
	for i := range insts {
		in := &benchInstance{}
		insts[i] = in
		cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
			DialOptions: count.dialOptions()})
		if err != nil {
			return nil, err
		}
		defer cli.Close()
		w, err := watch.NewEtcdSource(cli, watch.Options{Prefixes: []string{prefix}})
		if err != nil {
			return nil, err
		}
		r, err := render.New(render.Options{
			Templates: []render.Template{{Name: "galera", Text: noCheck}},
			Prefixes:  []string{prefix},
			Vars:      map[string]string{"bind": "127.0.0.1:3306", "runtime_socket": "/run/haproxy/admin.sock", "state_file": "/run/haproxy/state"},
		})
		if err != nil {
			return nil, err
		}
		pub, err := fleet.NewPublisher(cli, fleet.Options{Prefix: fleetStatus, Instance: fmt.Sprintf("lb%02d", i), TTL: fleet.DefaultTTL})
		if err != nil {
			return nil, err
		}
		snaps := make(chan watch.Snapshot, 1)
		wg.Go(func() { _ = pub.Run(ctx) })
		wg.Go(func() { _ = w.Run(ctx, snaps) })
		wg.Go(func() {
			var prev []byte
			for {
				var s watch.Snapshot
				select {
				case <-ctx.Done():
					return
				case s = <-snaps:
				}
				out, err := r.Render(render.Input{Revision: s.Revision, KVs: s.Map()})
				if err != nil {
					errs <- err
					return
				}
				if prev != nil {
					if _, err := haproxy.PlanChange(prev, out.Config, haproxy.Caps{}); err != nil {
						errs <- err
						return
					}
				}
				prev = out.Config
				in.rendered.Store(s.Revision)
				if err := pub.Update(ctx, func(st *fleet.Report) {
					st.Prefixes = []string{prefix}
					st.AppliedRevision, st.SeenRevision = s.Revision, s.Revision
					st.LastResult, st.Method, st.LastApply = fleet.ResultOK, "runtime", time.Now()
					st.ConfigSHA256 = fleet.SHA256(out.Config)
				}); err == nil {
					in.published.Store(s.Revision)
				}
			}
		})
	}
	// all reaches rev: every instance's field at or past rev.
	all := func(rev int64, field func(*benchInstance) *atomic.Int64) error {
		deadline := time.Now().Add(60 * time.Second)
		for {
			select {
			case err := <-errs:
				return err
			default:
			}
			done := true
			for _, in := range insts {
				if field(in).Load() < rev {
					done = false
					break
				}
			}
			if done {
				return nil
			}
			if time.Now().After(deadline) {
				lo, behind := int64(-1), 0
				for _, in := range insts {
					if v := field(in).Load(); v < rev {
						behind++
						if lo < 0 || v < lo {
							lo = v
						}
					}
				}
				return fmt.Errorf("the fleet never reached revision %d: %d instances behind, lowest at %d", rev, behind, lo)
			}
			time.Sleep(time.Millisecond)
		}
	}
	rendered := func(in *benchInstance) *atomic.Int64 { return &in.rendered }
	published := func(in *benchInstance) *atomic.Int64 { return &in.published }
	// Every instance published a snapshot with the loaded nodes. (Not the
	// current revision: the instances' own status puts raise it, and a
	// snapshot taken before them stays at the nodes' revision until the
	// next change under the prefix, which is why this bench used to fail
	// now and then with "never reached revision N".)
	if err := all(loaded, published); err != nil {
		return nil, err
	}

	var toRendered, toPublished sample
	c0, t0 := count.total(), time.Now()
	for i := 0; i < fleetReps; i++ {
		start := time.Now()
		resp, err := admin.Put(ctx, fmt.Sprintf("%s/node%04d", prefix, i), "10.2.0."+strconv.Itoa(i+1)+":3307")
		if err != nil {
			return nil, err
		}
		if err := all(resp.Header.Revision, rendered); err != nil {
			return nil, err
		}
		toRendered = append(toRendered, time.Since(start))
		if err := all(resp.Header.Revision, published); err != nil {
			return nil, err
		}
		toPublished = append(toPublished, time.Since(start))
		fmt.Fprint(os.Stderr, ".")
	}
	busy := float64(count.total()-c0) / time.Since(t0).Seconds()

	c1, t1 := count.total(), time.Now()
	time.Sleep(10 * time.Second)
	idle := float64(count.total()-c1) / time.Since(t1).Seconds()

	rt0 := time.Now()
	f, err := fleet.ReadAll(ctx, admin, fleetStatus, []string{prefix})
	if err != nil {
		return nil, err
	}
	readAll := time.Since(rt0)
	if n := f.Counts()[fleet.Converged]; n != fleetInstances {
		return nil, errors.New("ReadAll: " + strconv.Itoa(n) + " of 50 converged")
	}
	what := fmt.Sprintf("%d instances, %d nodes", fleetInstances, fleetNodes)
	return []string{
		toRendered.row(what+": etcd Put → all rendered + planned", "in process: watch, render, plan", "-"),
		toPublished.row(what+": etcd Put → all published the applied revision", "in process: + status put", "-"),
		one(what+": etcd requests/s from the fleet during the changes (unary + stream messages)", "in process", fmt.Sprintf("%.0f", busy), "-"),
		one(what+": etcd requests/s, idle fleet (lease keepalives, watch probes)", "in process", fmt.Sprintf("%.1f", idle), "-"),
		one(fmt.Sprintf("haconfd status (ReadAll) over %d instances, all converged", fleetInstances), "in process", ms(readAll), "-"),
	}, nil
}
