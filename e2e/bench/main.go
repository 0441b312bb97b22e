// Command bench measures haconfd end to end on this machine and prints a
// table: how long from the etcd Put of a new node until the first client
// connection through HAProxy is served by it. Run it with `make bench`.
// Timing targets are checked here, never by asserts in tests.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haconfd/haconfd/internal/etcdserver"
	"github.com/haconfd/haconfd/internal/testbed"
)

const prefix = "/components/galera"

func main() {
	bin := flag.String("haconfd", "bin/haconfd", "haconfd binary")
	reps := flag.Int("n", 20, "repetitions")
	flag.Parse()
	rows, err := run(*bin, *reps)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	fmt.Println()
	fmt.Println("| measurement | path | n | p50 | p90 | max | target |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Println(r)
	}
}

type sample []time.Duration

func (s sample) row(name, path, target string) string {
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
	return fmt.Sprintf("| %s | %s | %d | %s | %s | %s | %s |", name, path, len(s), ms(q(0.5)), ms(q(0.9)), ms(s[len(s)-1]), target)
}

func run(bin string, reps int) ([]string, error) {
	dir, err := os.MkdirTemp("", "hcbench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	srv, err := etcdserver.Start(ctx, etcdserver.Options{Dir: filepath.Join(dir, "etcd")})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	defer cli.Close()

	anchor, err := testbed.StartBackend("anchor")
	if err != nil {
		return nil, err
	}
	defer anchor.Close()
	if err := putNode(ctx, cli, "anchor", anchor.Port); err != nil {
		return nil, err
	}
	front, err := testbed.FreeAddr()
	if err != nil {
		return nil, err
	}
	pidFile := filepath.Join(dir, "haproxy.pid")
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	cmd := exec.Command(bin, "run", "--etcd-endpoints", strings.Join(srv.Endpoints(), ","),
		"--output", cfgPath, "--pidfile", pidFile,
		"--runtime-socket", filepath.Join(dir, "admin.sock"), "--bind", front,
		"--check-port", "none", "--wait", "0", "--stop-haproxy-on-exit", "--log-level", cmp.Or(os.Getenv("BENCH_LOG_LEVEL"), "warn"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
		}
		killPidfile(pidFile)
	}()
	if err := testbed.Poll(30*time.Second, 20*time.Millisecond, func() bool {
		id, err := testbed.Ask(front, time.Second)
		return err == nil && id == "anchor"
	}); err != nil {
		return nil, errors.New("haconfd never brought HAProxy up")
	}

	var add, remove sample
	for i := 0; i < reps; i++ {
		id := fmt.Sprintf("n%d", i)
		b, err := testbed.StartBackend(id)
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := putNode(ctx, cli, id, b.Port); err != nil {
			return nil, err
		}
		if err := testbed.Poll(30*time.Second, time.Millisecond, func() bool {
			a0 := time.Now()
			got, err := testbed.Ask(front, time.Second)
			if os.Getenv("BENCH_LOG_LEVEL") != "" && time.Since(a0) > 50*time.Millisecond {
				fmt.Fprintf(os.Stderr, "slow ask %v at +%v: %q %v\n", time.Since(a0), a0.Sub(t0), got, err)
			}
			return err == nil && got == id
		}); err != nil {
			return nil, fmt.Errorf("node %s never served", id)
		}
		add = append(add, time.Since(t0))

		t0 = time.Now()
		if _, err := cli.Delete(ctx, prefix+"/"+id+"/", clientv3.WithPrefix()); err != nil {
			return nil, err
		}
		// Removal is done when the live config has lost the server and a
		// run of connections sees only the anchor. Backends stay up until the end:
		// a closed one still in a draining HAProxy's config would cost a 1 s retry.
		if err := testbed.Poll(30*time.Second, time.Millisecond, func() bool {
			if live, err := os.ReadFile(cfgPath); err != nil || strings.Contains(string(live), " "+id+" ") {
				return false
			}
			for k := 0; k < 20; k++ {
				if got, err := testbed.Ask(front, time.Second); err != nil || got != "anchor" {
					return false
				}
			}
			return true
		}); err != nil {
			return nil, fmt.Errorf("node %s never left", id)
		}
		remove = append(remove, time.Since(t0))
		defer b.Close()
		fmt.Fprintf(os.Stderr, ".")
	}
	return []string{
		add.row("etcd Put → first connection served by the new node", "reload", "p50 ≤ 200 ms"),
		remove.row("etcd Delete → gone from the live config, 20 connections in a row miss it", "reload", "-"),
	}, nil
}

func putNode(ctx context.Context, cli *clientv3.Client, id string, port int) error {
	base := prefix + "/" + id
	_, err := cli.Txn(ctx).Then(
		clientv3.OpPut(base+"/ip", "127.0.0.1"),
		clientv3.OpPut(base+"/port", strconv.Itoa(port)),
	).Commit()
	return err
}

func killPidfile(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
}
