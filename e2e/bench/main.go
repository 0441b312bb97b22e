// Command bench measures haconfd end to end on this machine and prints a
// table. Run it with `make bench`. Timing targets are checked here, never
// by asserts in tests (the machines are shared and noisy).
//
// Rows: add/remove convergence through the reload path and the runtime
// API path; 32 clients under membership churn (failed connections,
// HAProxy processes started); a storm of 200 changes; render + plan time
// and memory at 10, 1,000 and 10,000 nodes; idle CPU and RSS.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/etcdserver"
	"github.com/haconfd/haconfd/internal/testbed"
	"github.com/haconfd/haconfd/internal/testhaproxy"
	"github.com/haconfd/haconfd/watch"
)

const prefix = "/components/galera"

// noCheck: see testbed.NoCheckTemplate.
const noCheck = testbed.NoCheckTemplate

var (
	bin    = flag.String("haconfd", "bin/haconfd", "haconfd binary")
	hapBin = flag.String("haproxy", "", "HAProxy binary haconfd drives (default: $"+testhaproxy.EnvVar+", else haproxy on PATH or in /usr/sbin)")
	reps   = flag.Int("n", 20, "repetitions of add/remove")
	only   = flag.String("only", "", "run only these steps (comma-separated names)")
	vs     = flag.String("compare", "", "a second HAProxy binary: the -compare-steps run again with it, and a side-by-side table follows")
	vsOnly = flag.String("compare-steps", "reload path,runtime path,lanes,churn,storm", "steps run with both binaries (comma-separated names)")
	hap    testhaproxy.Binary // the binary -haproxy names, resolved
)

func main() {
	flag.Parse()
	if *hapBin != "" {
		if err := os.Setenv(testhaproxy.EnvVar, *hapBin); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
	}
	var err error
	if hap, err = testhaproxy.Find(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: -haproxy: %v\n", err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "bench: %s\n", hap)
	var rows []string
	add := func(r ...string) { rows = append(rows, r...) }
	steps := []struct {
		name string
		f    func() ([]string, error)
	}{
		{"reload path", func() ([]string, error) { return convergence("reload", "", "--apply", "reload") }},
		{"runtime path", func() ([]string, error) { return convergence("runtime", noCheck) }},
		{"lanes", lanesBench},
		{"churn", churn},
		{"storm", storm},
		{"render+plan", renderPlan},
		{"idle", idle},
		{"fleet", fleetBench},
	}
	in := func(list, name string) bool { return strings.Contains(","+list+",", ","+name+",") }
	var first []string // rows of the compared steps, with the first binary
	for _, s := range steps {
		if *only != "" && !in(*only, s.name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s ", s.name)
		r, err := s.f()
		fmt.Fprintln(os.Stderr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", s.name, err)
			os.Exit(1)
		}
		add(r...)
		if *vs != "" && in(*vsOnly, s.name) {
			first = append(first, r...)
		}
	}
	fmt.Println()
	fmt.Printf("HAProxy %s (%s)\n\n", hap.Release(), hap.Path)
	fmt.Println("| measurement | path | n | p50 | p90 | max | target |")
	fmt.Println("|---|---|---|---|---|---|---|")
	for _, r := range rows {
		fmt.Println(r)
	}
	if *vs == "" {
		return
	}
	a := hap
	if err := os.Setenv(testhaproxy.EnvVar, *vs); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if hap, err = testhaproxy.Find(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: -compare: %v\n", err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "bench: %s\n", hap)
	var second []string
	for _, s := range steps {
		if (*only != "" && !in(*only, s.name)) || !in(*vsOnly, s.name) {
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s (%s) ", s.name, hap.Release())
		r, err := s.f()
		fmt.Fprintln(os.Stderr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench %s with %s: %v\n", s.name, hap.Release(), err)
			os.Exit(1)
		}
		second = append(second, r...)
	}
	fmt.Println()
	fmt.Print(sideBySide(a.Release(), hap.Release(), first, second))
}

// sideBySide puts the rows of two runs of the same steps next to each
// other, matched by measurement and path: p50, p90 and max of each.
func sideBySide(a, b string, first, second []string) string {
	cells := func(r string) []string {
		f := strings.Split(strings.TrimSpace(r), "|")
		if len(f) >= 2 {
			f = f[1 : len(f)-1] // the empty cells outside the first and last "|"
		}
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		for len(f) < 7 {
			f = append(f, "")
		}
		return f
	}
	// A measurement may carry its run's own counts ("(26 changes, 9099
	// ok)"): not part of what is compared.
	counts := regexp.MustCompile(` \(([0-9]+ [a-z]+, )*[0-9]+ ok\)`)
	key := func(c []string) string { return counts.ReplaceAllString(c[0], "") + "\x00" + c[1] }
	byKey := map[string][]string{}
	for _, r := range second {
		c := cells(r)
		byKey[key(c)] = c
	}
	var out strings.Builder
	fmt.Fprintf(&out, "Side by side: HAProxy %s | HAProxy %s\n\n", a, b)
	fmt.Fprintf(&out, "| measurement | path | %s p50 | p90 | max | %s p50 | p90 | max | target |\n", a, b)
	out.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range first {
		c := cells(r)
		d, ok := byKey[key(c)]
		if !ok {
			d = []string{"", "", "", "-", "", "", ""}
		}
		fmt.Fprintf(&out, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c[0], c[1], c[3], c[4], c[5], d[3], d[4], d[5], c[6])
	}
	return out.String()
}

type sample []time.Duration

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func (s sample) row(name, path, target string) string {
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) time.Duration { return s[min(len(s)-1, int(p*float64(len(s))))] }
	return fmt.Sprintf("| %s | %s | %d | %s | %s | %s | %s |", name, path, len(s), ms(q(0.5)), ms(q(0.9)), ms(s[len(s)-1]), target)
}

func one(name, path, value, target string) string {
	return fmt.Sprintf("| %s | %s | 1 | %s | | | %s |", name, path, value, target)
}

// world is an etcd, a HAProxy frontend address and a running haconfd.
type world struct {
	dir, front, pidFile, cfgPath string
	srv                          *etcdserver.Server
	cli                          *clientv3.Client
	cmd                          *exec.Cmd
	mu                           sync.Mutex
	log                          bytes.Buffer
	backends                     []*testbed.Backend
}

func (w *world) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.log.Write(b)
}

func (w *world) logText() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.log.String()
}

// start brings up etcd with an anchor node and haconfd (template text
// if not empty) until HAProxy serves the anchor.
func start(template string, extra ...string) (*world, error) {
	dir, err := os.MkdirTemp("", "hcbench")
	if err != nil {
		return nil, err
	}
	w := &world{dir: dir, pidFile: filepath.Join(dir, "haproxy.pid"), cfgPath: filepath.Join(dir, "haproxy.cfg")}
	if w.srv, err = etcdserver.Start(context.Background(), etcdserver.Options{Dir: filepath.Join(dir, "etcd")}); err != nil {
		return w, err
	}
	if w.cli, err = clientv3.New(clientv3.Config{Endpoints: w.srv.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()}); err != nil {
		return w, err
	}
	anchor, err := w.backend("anchor")
	if err != nil {
		return w, err
	}
	if err := w.putNode("anchor", anchor.Port); err != nil {
		return w, err
	}
	if w.front, err = testbed.FreeAddr(); err != nil {
		return w, err
	}
	args := []string{"run", "--etcd-endpoints", strings.Join(w.srv.Endpoints(), ","),
		"--output", w.cfgPath, "--pidfile", w.pidFile, "--runtime-socket", filepath.Join(dir, "admin.sock"),
		"--bind", w.front, "--check-port", "none", "--wait", "0", "--stop-haproxy-on-exit",
		"--listen", "", "--drain-timeout", "1s", "--log-level", "info", "--haproxy-bin", hap.Path,
		// The bench adds and removes nodes one after another for minutes:
		// the max-remove guard (tested on its own) would hold the second
		// removal within its window.
		"--max-remove", "1"}
	if template != "" {
		tp := filepath.Join(dir, "t.tmpl")
		if err := os.WriteFile(tp, []byte(template), 0o644); err != nil {
			return w, err
		}
		args = append(args, "--template", tp)
	}
	w.cmd = exec.Command(*bin, append(args, extra...)...)
	w.cmd.Stderr = w
	if err := w.cmd.Start(); err != nil {
		return w, err
	}
	if err := testbed.Poll(30*time.Second, 10*time.Millisecond, func() bool {
		id, err := testbed.Ask(w.front, time.Second)
		return err == nil && id == "anchor"
	}); err != nil {
		return w, fmt.Errorf("haconfd never brought HAProxy up:\n%s", w.logText())
	}
	// HAProxy serves before the start is verified and logged: wait for
	// the log, so that later counts of starts and reloads begin at 1.
	if err := testbed.Poll(30*time.Second, 10*time.Millisecond, func() bool { return w.count("start") >= 1 }); err != nil {
		return w, fmt.Errorf("haconfd never logged its first start:\n%s", w.logText())
	}
	return w, nil
}

func (w *world) backend(id string) (*testbed.Backend, error) {
	b, err := testbed.StartBackend(id)
	if err == nil {
		w.backends = append(w.backends, b)
	}
	return b, err
}

func (w *world) stop() {
	if w.cmd != nil && w.cmd.Process != nil {
		_ = w.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = w.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = w.cmd.Process.Kill()
		}
	}
	killPidfile(w.pidFile)
	if w.cli != nil {
		w.cli.Close()
	}
	if w.srv != nil {
		w.srv.Close()
	}
	for _, b := range w.backends {
		b.Close()
	}
	os.RemoveAll(w.dir)
}

func (w *world) putNode(id string, port int) error {
	_, err := w.cli.Put(context.Background(), prefix+"/"+id, "127.0.0.1:"+strconv.Itoa(port))
	return err
}

// count is the number of "config live" log lines with action=<action>.
func (w *world) count(action string) int {
	n := 0
	for _, line := range strings.Split(w.logText(), "\n") {
		if strings.Contains(line, `msg="config live"`) && strings.Contains(line, "action="+action+" ") {
			n++
		}
	}
	return n
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// convergence: etcd Put → first connection served by the new node, and
// Delete → the node gone from the live config and 20 connections in a
// row miss it.
func convergence(path, template string, extra ...string) ([]string, error) {
	w, err := start(template, extra...)
	defer w.stop()
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	var add, remove sample
	for i := 0; i < *reps; i++ {
		id := fmt.Sprintf("n%d", i)
		b, err := w.backend(id)
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := w.putNode(id, b.Port); err != nil {
			return nil, err
		}
		if err := testbed.Poll(30*time.Second, 0, func() bool {
			got, err := testbed.Ask(w.front, time.Second)
			return err == nil && got == id
		}); err != nil {
			return nil, fmt.Errorf("node %s never served", id)
		}
		add = append(add, time.Since(t0))

		t0 = time.Now()
		if _, err := w.cli.Delete(ctx, prefix+"/"+id); err != nil {
			return nil, err
		}
		if err := testbed.Poll(30*time.Second, 0, func() bool {
			if live, err := os.ReadFile(w.cfgPath); err != nil || strings.Contains(string(live), " "+id+" ") {
				return false
			}
			for k := 0; k < 20; k++ {
				if got, err := testbed.Ask(w.front, time.Second); err != nil || got != "anchor" {
					return false
				}
			}
			return true
		}); err != nil {
			return nil, fmt.Errorf("node %s never left; haconfd's last lines:\n%s", id, tail(w.logText(), 30))
		}
		remove = append(remove, time.Since(t0))
		fmt.Fprint(os.Stderr, ".")
	}
	target := "p50 ≤ 200 ms"
	if path == "runtime" {
		target = "p50 ≤ 10 ms"
	}
	return []string{
		add.row("etcd Put → first connection served by the new node", path, target),
		remove.row("etcd Delete → gone from the config file, 20 connections in a row miss it", path, "-"),
	}, nil
}

// churn: 32 clients for 10 s while nodes are added, removed, moved and
// drained every 300-500 ms through the runtime path.
func churn() ([]string, error) {
	w, err := start(noCheck)
	defer w.stop()
	if err != nil {
		return nil, err
	}
	pidsBefore, _ := os.ReadFile(w.pidFile)
	startsBefore := w.count("start") + w.count("reload")
	var bs, alt []*testbed.Backend
	for i := 0; i < 6; i++ {
		b, err := w.backend(fmt.Sprintf("c%d", i))
		if err != nil {
			return nil, err
		}
		a, err := w.backend(fmt.Sprintf("c%d", i))
		if err != nil {
			return nil, err
		}
		bs, alt = append(bs, b), append(alt, a)
	}
	var ok, failed int
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for c := 0; c < 32; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := testbed.Ask(w.front, 2*time.Second)
				mu.Lock()
				if err != nil {
					failed++
				} else {
					ok++
				}
				mu.Unlock()
			}
		}()
	}
	ctx := context.Background()
	end := time.Now().Add(10 * time.Second)
	changes := 0
	for i := 0; time.Now().Before(end); i++ {
		k := i % len(bs)
		id := bs[k].ID
		switch i % 4 {
		case 0:
			err = w.putNode(id, bs[k].Port)
		case 1:
			err = w.putNode(id, alt[k].Port)
		case 2:
			_, err = w.cli.Put(ctx, prefix+"/"+id, fmt.Sprintf(`{"ip":"127.0.0.1","port":%d,"state":"Donor/Desynced"}`, alt[k].Port))
		case 3:
			_, err = w.cli.Delete(ctx, prefix+"/"+id)
		}
		if err != nil {
			return nil, err
		}
		changes++
		time.Sleep(time.Duration(300+(i*37)%200) * time.Millisecond)
		fmt.Fprint(os.Stderr, ".")
	}
	close(stop)
	wg.Wait()
	pidsAfter, _ := os.ReadFile(w.pidFile)
	started := w.count("start") + w.count("reload") - startsBefore
	if !bytes.Equal(pidsBefore, pidsAfter) && started == 0 {
		started = 1
	}
	if started > 0 {
		for _, line := range strings.Split(w.logText(), "\n") {
			if strings.Contains(line, "falling back") || strings.Contains(line, "action=reload") || strings.Contains(line, "action=start") {
				fmt.Fprintln(os.Stderr, "churn:", line)
			}
		}
	}
	return []string{
		one(fmt.Sprintf("failed connections, 32 clients, membership changes for 10 s (%d changes, %d ok)", changes, ok), "runtime", strconv.Itoa(failed), "0"),
		one("HAProxy processes started during that churn", "runtime", strconv.Itoa(started), "0"),
	}, nil
}

// storm: 200 changes written back to back; how many applies, and how
// long until the last one is live.
func storm() ([]string, error) {
	w, err := start("", "--wait", "100ms:2s")
	defer w.stop()
	if err != nil {
		return nil, err
	}
	before := w.count("start") + w.count("reload") + w.count("runtime")
	t0 := time.Now()
	for i := 0; i < 200; i++ {
		if _, err := w.cli.Put(context.Background(), fmt.Sprintf("%s/s%03d", prefix, i), fmt.Sprintf("10.9.%d.%d:3306", i/250, i%250+1)); err != nil {
			return nil, err
		}
	}
	if err := testbed.Poll(60*time.Second, time.Millisecond, func() bool {
		b, _ := os.ReadFile(w.cfgPath)
		return bytes.Contains(b, []byte("server s199 10.9.0.200:3306"))
	}); err != nil {
		return nil, errors.New("storm never converged")
	}
	took := time.Since(t0)
	// The file is written before "config live" is logged: wait for the
	// log line, then for the longest quiescence (2 s) to count any apply
	// that follows.
	applied := func() int { return w.count("start") + w.count("reload") + w.count("runtime") - before }
	if err := testbed.Poll(10*time.Second, 5*time.Millisecond, func() bool { return applied() > 0 }); err != nil {
		return nil, errors.New("storm: the final state is in the file but no apply was logged")
	}
	time.Sleep(2500 * time.Millisecond)
	applies := applied()
	return []string{
		one("storm of 200 changes: applies", "auto, --wait 100ms:2s", strconv.Itoa(applies), "≤ 2"),
		one("storm of 200 changes: first Put → final state live", "auto, --wait 100ms:2s", ms(took), "-"),
	}, nil
}

// renderPlan: `haconfd render --plan --from-file` on snapshots of 10,
// 1,000 and 10,000 nodes against a live file with one node fewer; the
// time haconfd reports for render+plan, warm (the median of 5 more
// render+plan runs in the process: what the daemon spends on a change)
// and, at 10,000, cold (the first render of a fresh process: what a dry
// run costs), and its peak RSS. Nodes are
// "ip:port" values, and at 10,000 also the five keys per node that
// `haconfd register --mysql-dsn` writes (ip, port, host, state, index).
func renderPlan() ([]string, error) {
	dir, err := os.MkdirTemp("", "hcbench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// The stop watch lives in a bench-only program (e2e/bench/renderplan)
	// that renders and plans as `haconfd render --plan` does.
	planBin := filepath.Join(dir, "renderplan")
	if out, err := exec.Command("go", "build", "-o", planBin, "./e2e/bench/renderplan").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./e2e/bench/renderplan: %v\n%s", err, out)
	}
	var rows []string
	for _, c := range []struct {
		n   int
		dir bool
	}{{10, false}, {1000, false}, {10000, false}, {10000, true}} {
		n := c.n
		snap := watch.Snapshot{Revision: int64(n)}
		var last []watch.KV // the keys of the node left out of the live file
		for i := 0; i < n; i++ {
			ip := fmt.Sprintf("10.%d.%d.%d", i/65536, i/256%256, i%256)
			node := fmt.Sprintf("%s/node%05d", prefix, i)
			kvs := []watch.KV{{Key: node, Value: ip + ":3306"}}
			if c.dir {
				kvs = []watch.KV{{Key: node + "/ip", Value: ip}, {Key: node + "/port", Value: "3306"},
					{Key: node + "/host", Value: fmt.Sprintf("db%05d.example.com", i)},
					{Key: node + "/wsrep_local_state_comment", Value: "Synced"},
					{Key: node + "/wsrep_local_index", Value: strconv.Itoa(i)}}
			}
			snap.KVs = append(snap.KVs, kvs...)
			last = kvs
		}
		sort.Slice(snap.KVs, func(i, j int) bool { return snap.KVs[i].Key < snap.KVs[j].Key })
		name := fmt.Sprintf("%d-%t", n, c.dir)
		full := filepath.Join(dir, "snap"+name+".json")
		less := filepath.Join(dir, "less"+name+".json")
		if err := writeSnap(full, snap); err != nil {
			return nil, err
		}
		if err := writeSnap(less, watch.Snapshot{Revision: snap.Revision, KVs: snap.KVs[:len(snap.KVs)-len(last)]}); err != nil {
			return nil, err
		}
		live := filepath.Join(dir, "live"+name+".cfg")
		base := func(from string) []string {
			return []string{"render", "--from-file", from, "--output", live, "--validate=false",
				"--runtime-socket", filepath.Join(dir, "a.sock"), "--bind", "127.0.0.1:3306", "--log-level", "error"}
		}
		out, err := exec.Command(*bin, base(less)...).Output()
		if err != nil {
			return nil, fmt.Errorf("render %d: %v", n, err)
		}
		if err := os.WriteFile(live, out, 0o644); err != nil {
			return nil, err
		}
		var times, warm sample
		var rss int64
		for r := 0; r < 10; r++ {
			cmd := exec.Command(planBin, "--from-file", full, "--output", live,
				"--runtime-socket", filepath.Join(dir, "a.sock"), "--bind", "127.0.0.1:3306", "--log-level", "error")
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			if err != nil {
				return nil, fmt.Errorf("renderplan %d: %v\n%s", n, err, stderr.String())
			}
			d, w, kib, err := timing(stderr.String())
			if err != nil {
				return nil, fmt.Errorf("render --plan %d: %v\n%s", n, err, stderr.String())
			}
			times, warm = append(times, d), append(warm, w)
			rss = max(rss, kib)
			var plan haproxy.Plan
			if err := json.Unmarshal(stdout.Bytes(), &plan); err != nil || len(plan.Commands) == 0 {
				return nil, fmt.Errorf("render --plan %d: no runtime commands: %v", n, err)
			}
		}
		fmt.Fprint(os.Stderr, ".")
		target, layout := "-", "ip:port values"
		if n == 10000 {
			target = "≤ 50 ms, ≤ 64 MiB RSS"
		}
		if c.dir {
			layout = "5 keys per node"
		}
		what := fmt.Sprintf("render + plan, %d nodes, %s", n, layout)
		rows = append(rows, warm.row(fmt.Sprintf("%s (haconfd peak RSS %.1f MiB)", what, float64(rss)/1024),
			"warm process, as the daemon renders a change", target))
		if n == 10000 {
			rows = append(rows, times.row(what, "fresh `render --plan` process, first render", "-"))
		}
	}
	return rows, nil
}

func writeSnap(path string, s watch.Snapshot) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return s.WriteJSON(f)
}

// timing reads the "render_plan=<duration>", "render_plan_warm=<duration>"
// and "peak_rss_kib=N" lines e2e/bench/renderplan prints. The peak RSS comes
// from haconfd itself (VmHWM): the rusage of a child started with vfork,
// as Go starts them, includes the bench's own memory.
func timing(stderr string) (cold, warm time.Duration, kib int64, err error) {
	kib = -1
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "render_plan="):
			cold, err = time.ParseDuration(strings.TrimPrefix(line, "render_plan="))
		case strings.HasPrefix(line, "render_plan_warm="):
			warm, err = time.ParseDuration(strings.TrimPrefix(line, "render_plan_warm="))
		case strings.HasPrefix(line, "peak_rss_kib="):
			kib, err = strconv.ParseInt(strings.TrimPrefix(line, "peak_rss_kib="), 10, 64)
		}
		if err != nil {
			return 0, 0, 0, err
		}
	}
	if cold == 0 || warm == 0 || kib < 0 {
		return 0, 0, 0, errors.New("no render_plan=, render_plan_warm= and peak_rss_kib= lines")
	}
	return cold, warm, kib, nil
}

// idle: haconfd with 3 nodes and nothing changing, for 10 s.
func idle() ([]string, error) {
	w, err := start("")
	defer w.stop()
	if err != nil {
		return nil, err
	}
	for i := 0; i < 2; i++ {
		b, err := w.backend(fmt.Sprintf("i%d", i))
		if err != nil {
			return nil, err
		}
		if err := w.putNode(b.ID, b.Port); err != nil {
			return nil, err
		}
	}
	time.Sleep(2 * time.Second)
	pid := w.cmd.Process.Pid
	cpu0, _, err := procStat(pid)
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	time.Sleep(10 * time.Second)
	cpu1, rss, err := procStat(pid)
	if err != nil {
		return nil, err
	}
	share := float64(cpu1-cpu0) / float64(time.Since(t0))
	return []string{
		one("idle haconfd, 3 nodes, 10 s: CPU", "-", fmt.Sprintf("%.2f %%", 100*share), "-"),
		one("idle haconfd: RSS", "-", fmt.Sprintf("%.1f MiB", float64(rss)/(1<<20)), "-"),
	}, nil
}

// procStat returns the CPU time used by pid and its RSS in bytes.
func procStat(pid int) (time.Duration, int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	rss, _ := strconv.ParseInt(f[21], 10, 64)
	const hz = 100 // USER_HZ
	return time.Duration(utime+stime) * time.Second / hz, rss * int64(os.Getpagesize()), nil
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
