// Command demo shows haconfd working end to end on this machine: an
// embedded etcd, three tiny TCP backends registered the way the original
// fleet discovery unit did (one directory per node, keys on a lease), a
// real HAProxy started and reloaded by haconfd, and clients connecting
// through it. It stops everything it started. Run it with `make demo`.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haconfd/haconfd/internal/testbed"
	"github.com/haconfd/haconfd/internal/testhaproxy"
)

const prefix = "/components/galera"

func main() {
	bin := flag.String("haconfd", "bin/haconfd", "haconfd binary")
	hapBin := flag.String("haproxy", "", "HAProxy binary haconfd drives (default: $"+testhaproxy.EnvVar+", else haproxy on PATH or in /usr/sbin)")
	flag.Parse()
	if *hapBin != "" {
		if err := os.Setenv(testhaproxy.EnvVar, *hapBin); err != nil {
			fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
			os.Exit(1)
		}
	}
	hap, err := testhaproxy.Find()
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: -haproxy: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *bin, hap); err != nil {
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, a ...any) { fmt.Printf("\n==> "+format+"\n", a...) }

func run(ctx context.Context, bin string, hap testhaproxy.Binary) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "hcdemo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	step("starting three example database backends (tiny TCP servers that answer their name)")
	var backends []*testbed.Backend
	for i := 1; i <= 3; i++ {
		b, err := testbed.StartBackend(fmt.Sprintf("db%d", i))
		if err != nil {
			return err
		}
		defer b.Close()
		backends = append(backends, b)
		fmt.Printf("    %s listening on %s\n", b.ID, b.Addr)
	}

	etcdPort, err := testbed.FreePort()
	if err != nil {
		return err
	}
	front, err := testbed.FreeAddr()
	if err != nil {
		return err
	}
	etcdURL := "http://127.0.0.1:" + strconv.Itoa(etcdPort)
	cfgPath := filepath.Join(dir, "haproxy.cfg")
	pidFile := filepath.Join(dir, "haproxy.pid")
	args := []string{"run",
		"--embedded-etcd", filepath.Join(dir, "etcd"), "--embedded-etcd-url", etcdURL,
		"--output", cfgPath, "--pidfile", pidFile, "--runtime-socket", filepath.Join(dir, "admin.sock"),
		"--bind", front, "--check-port", "none", "--wait", "50ms:500ms", "--stop-haproxy-on-exit",
		"--haproxy-bin", hap.Path,
	}
	step("starting haconfd on an embedded etcd, driving %s", hap)
	fmt.Printf("    %s %s\n", bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	logR, logW := io.Pipe()
	cmd.Stdout, cmd.Stderr = logW, logW
	go func() {
		sc := bufio.NewScanner(logR)
		for sc.Scan() {
			fmt.Printf("    | %s\n", sc.Text())
		}
	}()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start haconfd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); _ = logW.Close() }()
	defer func() {
		step("stopping haconfd (it stops the HAProxy it started: --stop-haproxy-on-exit)")
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		killPidfile(pidFile)
		fmt.Println("    done; everything the demo started is stopped and its files removed")
	}()

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcdURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	defer cli.Close()
	if err := waitEtcd(ctx, cli, exited); err != nil {
		return err
	}

	step("registering the three nodes under %s, the fleet way (ip/port/host/service_instance_name on a 10 s lease)", prefix)
	leases := map[string]clientv3.LeaseID{}
	for _, b := range backends {
		id, err := register(ctx, cli, b)
		if err != nil {
			return err
		}
		leases[b.ID] = id
		fmt.Printf("    %s/%s/{ip,port,host,service_instance_name} lease %x\n", prefix, b.ID, int64(id))
	}

	step("connecting through HAProxy at %s until every node has answered", front)
	seen, err := sample(ctx, front, func(m map[string]int) bool { return len(m) == 3 })
	if err != nil {
		return err
	}
	printSeen(seen)

	step("the live HAProxy config haconfd wrote (%s), listen section", cfgPath)
	printListen(cfgPath)

	pidBefore, _ := os.ReadFile(pidFile)
	step("node db2 goes away: its lease is revoked, as when its discovery unit stops")
	if _, err := cli.Revoke(ctx, leases["db2"]); err != nil {
		return err
	}
	seen, err = sample(ctx, front, func(m map[string]int) bool { return m["db2"] == 0 && m["db1"] > 0 && m["db3"] > 0 })
	if err != nil {
		return err
	}
	printSeen(seen)
	// The runtime API took db2 out at once; the file follows once haproxy
	// -c accepted it (tens of milliseconds).
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(cfgPath); err == nil && !strings.Contains(string(b), " db2 ") {
			break
		}
	}
	printListen(cfgPath)
	fmt.Println("\n    db2 is gone from the config and gets no connections; db1 and db3 kept serving.")
	if pidAfter, _ := os.ReadFile(pidFile); strings.TrimSpace(string(pidAfter)) == strings.TrimSpace(string(pidBefore)) {
		fmt.Printf("    The change went through HAProxy's runtime API: the same HAProxy process (pid %s) serves, no reload.\n", strings.TrimSpace(string(pidAfter)))
	}
	return nil
}

func waitEtcd(ctx context.Context, cli *clientv3.Client, exited <-chan error) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("haconfd exited early: %v", err)
		default:
		}
		c, cancel := context.WithTimeout(ctx, time.Second)
		_, err := cli.Get(c, "health")
		cancel()
		if err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return errors.New("embedded etcd did not answer within 30s")
}

func register(ctx context.Context, cli *clientv3.Client, b *testbed.Backend) (clientv3.LeaseID, error) {
	l, err := cli.Grant(ctx, 10)
	if err != nil {
		return 0, err
	}
	ka, err := cli.KeepAlive(ctx, l.ID)
	if err != nil {
		return 0, err
	}
	go func() {
		for range ka {
		}
	}()
	base := prefix + "/" + b.ID
	ops := []clientv3.Op{
		clientv3.OpPut(base+"/ip", "127.0.0.1", clientv3.WithLease(l.ID)),
		clientv3.OpPut(base+"/port", strconv.Itoa(b.Port), clientv3.WithLease(l.ID)),
		clientv3.OpPut(base+"/host", b.ID, clientv3.WithLease(l.ID)),
		clientv3.OpPut(base+"/service_instance_name", "galera@"+b.ID, clientv3.WithLease(l.ID)),
	}
	if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return 0, err
	}
	return l.ID, nil
}

// sample connects through addr in rounds of 30 until done accepts the
// distribution of one whole round.
func sample(ctx context.Context, addr string, done func(map[string]int) bool) (map[string]int, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		seen := map[string]int{}
		for i := 0; i < 30; i++ {
			id, err := testbed.Ask(addr, time.Second)
			if err != nil {
				id = "(no answer)"
			}
			seen[id]++
		}
		if done(seen) {
			return seen, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return seen, fmt.Errorf("HAProxy did not reach the expected state within 30s; last round: %v", seen)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func printSeen(seen map[string]int) {
	ids := make([]string, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	fmt.Println("    connections  answered by")
	for _, id := range ids {
		fmt.Printf("    %11d  %s\n", seen[id], id)
	}
}

func printListen(path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Printf("    (cannot read %s: %v)\n", path, err)
		return
	}
	on := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "listen ") {
			on = true
		}
		if on && strings.TrimSpace(line) != "" {
			fmt.Printf("    %s\n", line)
		}
	}
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
