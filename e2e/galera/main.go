// Command galera is haconfd's end-to-end test against a real Galera
// cluster (`make e2e-galera`, via run.sh): three mariadbd nodes on
// 127.0.0.11-13 (each its own datadir, socket and ports, running as the
// mysql user, haconfd notify as their wsrep_notify_cmd), `haconfd register`
// and `haconfd check` per node, and three `haconfd run` load balancers
// (embedded etcd in the first), each driving its own HAProxy: lb1 and lb2
// with a multi-writer, a writer and a reader port, lb3 serving the same
// cluster registered the severalnines way (/galera/<cluster>/<ip>/...). A
// client runs SQL through lb1 on a new connection per operation while
// nodes are stopped and restarted (IST), desynced and resynced, crashed,
// made to reject queries, drained by an operator, held back by FLUSH
// TABLES WITH READ LOCK, and left alone as a Donor; writers are checked on
// two load balancers. Every answer says which node served it and that
// node's own wsrep state at that moment.
//
// It fails when a query is served by a node that is not Synced later than
// -drain-bound after the state change, when clients see errors in a step
// where no node goes away, or when anything does not come up in time. It
// prints a summary table and the benchmark figures (issue 15).
//
// -baseline runs only the first seven steps with the flags every haconfd
// had before issue 15 (no notify, no priorities, no writer or reader
// port), so that an older binary gives the "before" figures.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/haconfd/haconfd/internal/testhaproxy"
)

const (
	galeraLib   = "/usr/lib/galera/libgalera_smm.so"
	mysqlPort   = 3306
	checkPort   = 9200
	gcommPort   = 4567
	istPort     = 4568
	sstPort     = 4444
	clusterName = "haconfd-e2e"
	appUser     = "app"
	appPassword = "app-e2e"
)

func main() {
	os.Exit(run())
}

type flags struct {
	haconfd    string
	haproxy    string
	keep       bool
	drainBound time.Duration
	workers    int
	baseline   bool
	maxRecv    int
}

func run() int {
	var f flags
	flag.StringVar(&f.haconfd, "haconfd", "bin/haconfd", "haconfd binary")
	flag.StringVar(&f.haproxy, "haproxy", "", "HAProxy binary haconfd drives (default: $"+testhaproxy.EnvVar+", else haproxy on PATH or in /usr/sbin)")
	flag.BoolVar(&f.keep, "keep", false, "keep the work directory (logs, datadirs) even on success")
	flag.DurationVar(&f.drainBound, "drain-bound", time.Second, "longest a node out of rotation may still get new connections after it left (the figures say how many came after 100ms)")
	flag.IntVar(&f.workers, "workers", 4, "concurrent clients")
	flag.BoolVar(&f.baseline, "baseline", false, "only the first seven steps, with the flags of haconfd before issue 15 (for an older binary's figures)")
	flag.IntVar(&f.maxRecv, "max-recv-queue", 20, "--max-recv-queue of the load balancers")
	flag.Parse()

	// The driver logs broken pipes on the root pools when a node stops.
	_ = mysql.SetLogger(log.New(io.Discard, "", 0))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	e := &env{f: f, began: time.Now()}
	err := e.run(ctx)
	e.cleanup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "\nFAIL: %v\n", err)
		if e.dir != "" {
			fmt.Fprintf(os.Stderr, "logs and datadirs kept in %s\n", e.dir)
		}
		return 1
	}
	if !f.keep {
		os.RemoveAll(e.dir)
	}
	fmt.Printf("\nPASS (%s in all)\n", time.Since(e.began).Round(time.Second))
	return 0
}

// env is everything the test started.
type env struct {
	f       flags
	began   time.Time
	dir     string
	haconfd string // the binary, copied into dir (the mysql user runs it as wsrep_notify_cmd)
	haproxy testhaproxy.Binary
	uid     uint32
	gid     uint32
	nodes   []*node
	procs   []*proc
	lbs     []*lb
	etcdURL string
	etcd    *clientv3.Client
	rows    []summaryRow

	mu     sync.Mutex
	events []event        // signals, drains: when a node was made to leave or come back
	notes  []summaryRow   // figures noted from other goroutines
	wg     sync.WaitGroup // those goroutines
}

// lb is one haconfd run with its HAProxy.
type lb struct {
	name   string
	dir    string
	front  string // listen galera
	writer string // listen galera-writer ("" in baseline)
	reader string // listen galera-reader
	sock   string
	listen string // haconfd's HTTP
	args   []string
	late   bool // started by a step (a load balancer that comes after the changes)
}

type node struct {
	n         int
	name      string
	ip        string
	checkPort int
	priority  string
	dir       string
	cnf       string
	sock      string
	db        *sql.DB // root over the unix socket
	proc      *proc
}

type proc struct {
	name   string
	cmd    *exec.Cmd // nil for a goroutine (stopFn ends it)
	stopFn func()
	done   chan struct{}
}

// event is something the test did to a node: it leaves rotation ("stop",
// "kill", "drain", "reject", "ftwrl") or may come back ("undrain",
// "unreject").
type event struct {
	at   time.Time
	node string
	kind string
}

func (e *env) event(node, kind string) time.Time {
	at := time.Now()
	e.mu.Lock()
	e.events = append(e.events, event{at, node, kind})
	e.mu.Unlock()
	return at
}

type summaryRow struct{ what, value string }

func (e *env) note(what, format string, a ...any) {
	v := fmt.Sprintf(format, a...)
	e.rows = append(e.rows, summaryRow{what, v})
	fmt.Printf("  %-48s %s\n", what, v)
}

func logf(format string, a ...any) {
	fmt.Printf("%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

func (e *env) run(ctx context.Context) error {
	if err := e.prepare(); err != nil {
		return err
	}
	if err := e.startHaconfd(); err != nil {
		return err
	}
	clusterStart := time.Now()
	if err := e.startNode(ctx, e.nodes[0], true); err != nil {
		return err
	}
	if err := e.waitState(ctx, e.nodes[0], "Synced", 90*time.Second); err != nil {
		return err
	}
	if err := e.createSchema(ctx); err != nil {
		return err
	}
	for _, n := range e.nodes {
		e.startSidecars(n)
	}
	for _, n := range e.nodes[1:] {
		if err := e.startNode(ctx, n, false); err != nil {
			return err
		}
		// One joiner at a time: the donor of a full SST is Donor/Desynced.
		if err := e.waitState(ctx, n, "Synced", 120*time.Second); err != nil {
			return err
		}
	}
	e.note("cluster of 3 Synced (bootstrap + 2 SST joins)", "%s", time.Since(clusterStart).Round(100*time.Millisecond))
	lbStart := time.Now()
	for _, l := range e.lbs {
		if l.late {
			continue
		}
		if err := e.waitUp(ctx, l, 3, 60*time.Second); err != nil {
			return err
		}
	}
	e.note("HAProxy: 3 servers UP after the cluster", "%s", time.Since(lbStart).Round(100*time.Millisecond))

	cl, err := newClient(e.lbs[0].front, e.f.workers)
	if err != nil {
		return err
	}
	defer cl.close()
	cl.start(ctx)
	mon := e.monitor(ctx)

	steps := e.coreSteps(ctx, cl)
	if !e.f.baseline {
		steps = append(steps, e.extendedSteps(ctx, cl)...)
	}
	for i := range steps {
		s := &steps[i]
		logf("STEP %s", s.name)
		s.from = time.Now()
		if err := s.do(); err != nil {
			return fmt.Errorf("step %q: %w", s.name, err)
		}
		s.to = time.Now()
	}
	cl.stop()
	mon.stop()
	if err := cl.dump(filepath.Join(e.dir, "records.csv")); err != nil {
		logf("%v", err)
	}
	failures := e.judge(cl, mon, steps)
	failures = append(failures, e.bench(cl, mon, steps)...)
	e.printSummary()
	return errors.Join(failures...)
}

// coreSteps are the steps every haconfd runs (also -baseline).
func (e *env) coreSteps(ctx context.Context, cl *client) []step {
	n1, n2, n3 := e.nodes[0], e.nodes[1], e.nodes[2]
	return []step{
		{name: "baseline", do: func() error { return pause(ctx, 3*time.Second) }},
		{name: "stop node2 (clean shutdown)", errorsOK: true, do: func() error {
			if err := e.stopNode(n2, syscall.SIGTERM); err != nil {
				return err
			}
			return pause(ctx, 3*time.Second)
		}},
		{name: "restart node2 (IST)", do: func() error {
			t0 := time.Now()
			if err := e.startNode(ctx, n2, false); err != nil {
				return err
			}
			if err := e.waitState(ctx, n2, "Synced", 90*time.Second); err != nil {
				return err
			}
			e.note("node2 rejoined by IST (start to Synced)", "%s", time.Since(t0).Round(100*time.Millisecond))
			if err := cl.waitServed(ctx, n2.name, t0, 30*time.Second); err != nil {
				return err
			}
			e.note("node2 back in rotation (start to first query)", "%s", time.Since(t0).Round(100*time.Millisecond))
			return pause(ctx, 2*time.Second)
		}},
		{name: "desync node3 (wsrep_desync=ON)", do: func() error {
			e.event(n3.name, "desync")
			if _, err := n3.db.ExecContext(ctx, "SET GLOBAL wsrep_desync=ON"); err != nil {
				return fmt.Errorf("desync node3: %w", err)
			}
			if err := e.waitState(ctx, n3, "Donor/Desynced", 30*time.Second); err != nil {
				return err
			}
			return pause(ctx, 3*time.Second)
		}},
		{name: "resync node3 (wsrep_desync=OFF)", do: func() error {
			t0 := e.event(n3.name, "resync")
			if _, err := n3.db.ExecContext(ctx, "SET GLOBAL wsrep_desync=OFF"); err != nil {
				return fmt.Errorf("resync node3: %w", err)
			}
			if err := e.waitState(ctx, n3, "Synced", 30*time.Second); err != nil {
				return err
			}
			if err := cl.waitServed(ctx, n3.name, t0, 30*time.Second); err != nil {
				return err
			}
			e.note("node3 serving again after resync", "%s", time.Since(t0).Round(10*time.Millisecond))
			return pause(ctx, 2*time.Second)
		}},
		{name: "crash node1 (SIGKILL)", errorsOK: true, do: func() error {
			if err := e.stopNode(n1, syscall.SIGKILL); err != nil {
				return err
			}
			return pause(ctx, 10*time.Second)
		}},
		{name: "restart node1 (IST)", do: func() error {
			t0 := time.Now()
			if err := e.startNode(ctx, n1, false); err != nil {
				return err
			}
			if err := e.waitState(ctx, n1, "Synced", 90*time.Second); err != nil {
				return err
			}
			e.note("node1 rejoined after crash (start to Synced)", "%s", time.Since(t0).Round(100*time.Millisecond))
			if err := cl.waitServed(ctx, n1.name, t0, 30*time.Second); err != nil {
				return err
			}
			return pause(ctx, 2*time.Second)
		}},
	}
}

type step struct {
	name     string
	errorsOK bool // a node goes away in this step: client errors are counted, not failed
	// lastResort: a node serves while not Synced on purpose (the last
	// resort): its answers are not drain failures.
	lastResort bool
	do         func() error
	from, to   time.Time
}

// judge checks the client's record against the steps.
func (e *env) judge(cl *client, mon *monitor, steps []step) []error {
	var fails []error
	recs := cl.records()
	total, errs := 0, 0
	nonSynced := 0
	for _, r := range recs {
		total++
		if r.err != "" {
			errs++
		}
	}
	fmt.Printf("\n%-34s %8s %7s %s\n", "step", "queries", "errors", "served by (node: count)")
	for _, s := range steps {
		q, ec := 0, 0
		by := map[string]int{}
		var firstErr string
		for _, r := range recs {
			at := r.at
			if r.err != "" {
				at = r.end
			}
			if at.Before(s.from) || !at.Before(s.to) {
				continue
			}
			q++
			if r.err != "" {
				ec++
				if firstErr == "" {
					firstErr = r.err
				}
				continue
			}
			by[r.node]++
		}
		fmt.Printf("%-34s %8d %7d %s\n", s.name, q, ec, fmtCounts(by))
		if ec > 0 {
			fmt.Printf("%-34s first error: %s\n", "", firstErr)
			e.note("client errors: "+s.name, "%d of %d", ec, q)
		}
		if ec > 0 {
			for _, r := range recs {
				if r.err != "" && !r.end.Before(s.from) && r.end.Before(s.to) {
					fmt.Printf("%-34s error at %s (began %s): %s\n", "", r.end.Format("15:04:05.000"), r.at.Format("15:04:05.000"), r.err)
				}
			}
		}
		if ec > 0 && !s.errorsOK {
			fails = append(fails, fmt.Errorf("step %q: %d client errors where no node went away (first: %s)", s.name, ec, firstErr))
		}
		if q == 0 {
			fails = append(fails, fmt.Errorf("step %q: no queries ran", s.name))
		}
	}
	// Every answer by a node that said it was not Synced must come within
	// -drain-bound of that node leaving Synced (as the state monitor, which
	// polls every node every 50ms, saw it): the time HAProxy needs to hear
	// of it. Episodes include the ones Galera makes by itself (an IST donor
	// is Donor/Desynced for a moment).
	type episode struct {
		node       string
		state      string
		left, last time.Time
		served     int
		lastResort bool // no other node was Synced: it serves on purpose
	}
	var eps []*episode
	open := map[string]*episode{}        // node → its episode while it answers non-Synced
	lastSynced := map[string]time.Time{} // node → its last Synced answer
	inLastResort := func(at time.Time) bool {
		for _, s := range steps {
			if s.lastResort && !at.Before(s.from) && at.Before(s.to) {
				return true
			}
		}
		return false
	}
	for _, r := range recs {
		if r.err != "" || inLastResort(r.at) {
			continue
		}
		if r.state == "Synced" {
			delete(open, r.node)
			lastSynced[r.node] = r.at
			continue
		}
		ep := open[r.node]
		if ep == nil {
			left, ok := mon.leftSynced(r.node, lastSynced[r.node], r.at)
			if !ok {
				left = r.at // the monitor missed it: count from this answer
			}
			ep = &episode{node: r.node, state: r.state, left: left, lastResort: !mon.othersSynced(r.node, left)}
			open[r.node] = ep
			eps = append(eps, ep)
		}
		ep.served++
		ep.last = r.at
	}
	var worst time.Duration
	for _, ep := range eps {
		d := ep.last.Sub(ep.left)
		if ep.lastResort {
			e.note(fmt.Sprintf("last resort: %s %s at %s", ep.node, ep.state, ep.left.Format("15:04:05.000")),
				"served %d queries (no other node was Synced)", ep.served)
			continue
		}
		worst = max(worst, d)
		e.note(fmt.Sprintf("drain: %s %s at %s", ep.node, ep.state, ep.left.Format("15:04:05.000")),
			"last new query %s later (%d served meanwhile)", d.Round(10*time.Millisecond), ep.served)
		if d > e.f.drainBound {
			nonSynced += ep.served
			fails = append(fails, fmt.Errorf("%s (%s) still got new connections %s after leaving Synced (bound %s)", ep.node, ep.state, d.Round(time.Millisecond), e.f.drainBound))
		}
	}
	e.note("time to drain a non-Synced node (worst)", "%s", worst.Round(10*time.Millisecond))
	e.note("queries through HAProxy (errors)", "%d (%d)", total, errs)
	e.note("served by a non-Synced node past the drain bound", "%d", nonSynced)
	return fails
}

func fmtCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func (e *env) printSummary() {
	e.wg.Wait()
	e.rows = append(e.rows, e.notes...)
	fmt.Printf("\nSUMMARY\n")
	for _, r := range e.rows {
		fmt.Printf("  %-52s %s\n", r.what, r.value)
	}
	fmt.Printf("  %-52s %s\n", "e2e wall time", time.Since(e.began).Round(time.Second))
}

func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// prepare checks the tools, makes the work directory and the node dirs.
func (e *env) prepare() error {
	if os.Geteuid() != 0 {
		return errors.New("run as root (mariadbd is started as the mysql user)")
	}
	for _, bin := range []string{"mariadbd", "mariadb-install-db", "rsync"} {
		if _, err := exec.LookPath(bin); err != nil {
			if _, err2 := os.Stat("/usr/sbin/" + bin); err2 != nil {
				return fmt.Errorf("%s not found: apt-get install mariadb-server galera-4 rsync haproxy (run.sh does)", bin)
			}
		}
	}
	if e.f.haproxy != "" {
		if err := os.Setenv(testhaproxy.EnvVar, e.f.haproxy); err != nil {
			return err
		}
	}
	hp, err := testhaproxy.Find()
	if err != nil {
		return fmt.Errorf("-haproxy: %w", err)
	}
	e.haproxy = hp
	e.note("HAProxy", "%s", hp)
	if _, err := os.Stat(galeraLib); err != nil {
		return fmt.Errorf("%s: %w (apt-get install galera-4)", galeraLib, err)
	}
	abs, err := filepath.Abs(e.f.haconfd)
	if err != nil {
		return err
	}
	if out, err := exec.Command(abs, "register", "--help").CombinedOutput(); err != nil {
		return fmt.Errorf("%s register --help: %v: %s", abs, err, firstLine(string(out)))
	}
	u, err := user.Lookup("mysql")
	if err != nil {
		return fmt.Errorf("user mysql: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	e.uid, e.gid = uint32(uid), uint32(gid)

	if e.dir, err = os.MkdirTemp("", "hcgalera"); err != nil {
		return err
	}
	if err := os.Chmod(e.dir, 0o755); err != nil {
		return err
	}
	fmt.Printf("work directory %s\n", e.dir)
	// The mysql user runs the binary as wsrep_notify_cmd: a copy it can read.
	e.haconfd = filepath.Join(e.dir, "haconfd")
	if err := copyFile(abs, e.haconfd, 0o755); err != nil {
		return err
	}
	etcdAddr, err := freeAddr("127.0.0.1")
	if err != nil {
		return err
	}
	e.etcdURL = "http://" + etcdAddr
	names := []string{"lb1", "lb2", "lb3", "lb4"}
	if e.f.baseline {
		names = names[:1]
	}
	for _, name := range names {
		l := &lb{name: name, dir: filepath.Join(e.dir, name), late: name == "lb4"}
		if err := os.MkdirAll(l.dir, 0o755); err != nil {
			return err
		}
		l.sock = filepath.Join(l.dir, "admin.sock")
		for _, a := range []*string{&l.front, &l.writer, &l.reader, &l.listen} {
			if *a, err = freeAddr("127.0.0.1"); err != nil {
				return err
			}
		}
		e.lbs = append(e.lbs, l)
	}
	var addrs []string
	for i := 1; i <= 3; i++ {
		ip := fmt.Sprintf("127.0.0.%d", 10+i)
		for _, p := range []int{mysqlPort, checkPort, checkPort + i, gcommPort, istPort, sstPort} {
			addr := net.JoinHostPort(ip, strconv.Itoa(p))
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("%s is not free: %w", addr, err)
			}
			l.Close()
		}
		addrs = append(addrs, net.JoinHostPort(ip, strconv.Itoa(gcommPort)))
	}
	for i := 1; i <= 3; i++ {
		n := &node{n: i, name: fmt.Sprintf("node%d", i), ip: fmt.Sprintf("127.0.0.%d", 10+i), checkPort: checkPort}
		if !e.f.baseline {
			// Each node publishes its own check port (the load balancers'
			// --check-port is wrong on purpose) and a writer priority:
			// node3 is preferred, node2 never writes.
			n.checkPort = checkPort + i
			n.priority = map[int]string{1: "2", 2: "0", 3: "1"}[i]
		}
		n.dir = filepath.Join(e.dir, n.name)
		n.sock = filepath.Join(n.dir, "mysqld.sock")
		n.cnf = filepath.Join(n.dir, "my.cnf")
		if err := os.MkdirAll(filepath.Join(n.dir, "data"), 0o755); err != nil {
			return err
		}
		cnf := fmt.Sprintf(`[mysqld]
user=mysql
datadir=%[1]s/data
socket=%[2]s
pid-file=%[1]s/mysqld.pid
log-error=%[1]s/error.log
bind-address=%[3]s
port=%[4]d
skip-name-resolve
performance_schema=OFF
innodb_buffer_pool_size=32M
innodb_log_file_size=32M
innodb_flush_log_at_trx_commit=0
binlog_format=ROW
default_storage_engine=InnoDB
innodb_autoinc_lock_mode=2
max_connections=500
wsrep_on=ON
wsrep_provider=%[5]s
wsrep_cluster_name=haconfd-e2e
wsrep_cluster_address=gcomm://%[6]s
wsrep_node_name=%[7]s
wsrep_node_address=%[3]s
wsrep_sst_method=rsync
wsrep_sst_receive_address=%[3]s:%[8]d
wsrep_provider_options="gmcast.listen_addr=tcp://%[3]s:%[9]d;ist.recv_addr=%[3]s:%[10]d;gcache.size=64M"
`, n.dir, n.sock, n.ip, mysqlPort, galeraLib, strings.Join(addrs, ","), n.name, sstPort, gcommPort, istPort)
		if !e.f.baseline {
			// Galera pushes every status and view change through haconfd.
			cnf += fmt.Sprintf("wsrep_notify_cmd='%s notify --etcd-endpoints %s --id %s --timeout 2s'\n", e.haconfd, e.etcdURL, n.name)
		}
		if err := os.WriteFile(n.cnf, []byte(cnf), 0o644); err != nil {
			return err
		}
		out, err := exec.Command("mariadb-install-db", "--defaults-file="+n.cnf, "--user=mysql",
			"--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput()
		if err != nil {
			return fmt.Errorf("mariadb-install-db for %s: %v\n%s", n.name, err, out)
		}
		if err := chownR(n.dir, int(e.uid), int(e.gid)); err != nil {
			return err
		}
		db, err := sql.Open("mysql", fmt.Sprintf("root@unix(%s)/?timeout=2s&readTimeout=5s&writeTimeout=5s", n.sock))
		if err != nil {
			return err
		}
		db.SetMaxOpenConns(6)
		n.db = db
		e.nodes = append(e.nodes, n)
	}
	return nil
}

func chownR(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func freeAddr(ip string) (string, error) {
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// start runs a process with its output in <dir>/<name>.log.
func (e *env) start(name string, cred *syscall.Credential, bin string, args ...string) (*proc, error) {
	logPath := filepath.Join(e.dir, name+".log")
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); out.Close(); close(p.done) }()
	e.procs = append(e.procs, p)
	return p, nil
}

// wait waits up to d for the process to exit; then kills its whole
// process group.
func (p *proc) wait(d time.Duration) {
	select {
	case <-p.done:
	case <-time.After(d):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// signal sends sig and waits up to d for the process to exit; then kills
// its whole process group.
func (p *proc) signal(sig syscall.Signal, d time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	if p.cmd == nil {
		p.stopFn()
		<-p.done
		return
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(d):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (e *env) cleanup() {
	for i := len(e.procs) - 1; i >= 0; i-- {
		e.procs[i].signal(syscall.SIGTERM, 30*time.Second)
	}
	for _, n := range e.nodes {
		if n.db != nil {
			n.db.Close()
		}
	}
	if e.etcd != nil {
		e.etcd.Close()
	}
	// A HAProxy left by haconfd (it stops it on exit; this is a backstop).
	for _, l := range e.lbs {
		if b, err := os.ReadFile(filepath.Join(l.dir, "haproxy.pid")); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	}
}

// startHaconfd starts the load balancers: lb1 with the embedded etcd,
// lb2 on it with the same settings (two load balancers must pick the same
// writers), lb3 serving the cluster as severalnines' image registers it.
func (e *env) startHaconfd() error {
	for i, l := range e.lbs {
		if l.late {
			continue
		}
		if err := e.startLB(i, l); err != nil {
			return err
		}
	}
	return nil
}

// startLB starts haconfd run for l (the first one with the embedded etcd).
func (e *env) startLB(i int, l *lb) error {
	{
		args := []string{"run", "--instance", l.name, "--listen", l.listen,
			"--output", filepath.Join(l.dir, "haproxy.cfg"), "--pidfile", filepath.Join(l.dir, "haproxy.pid"),
			"--runtime-socket", l.sock, "--bind", l.front,
			"--wait", "50ms:500ms", "--stop-haproxy-on-exit", "--log-level", "debug", "--haproxy-bin", e.haproxy.Path}
		if i == 0 {
			args = append(args, "--embedded-etcd", filepath.Join(e.dir, "etcd"), "--embedded-etcd-url", e.etcdURL)
		} else {
			args = append(args, "--etcd-endpoints", e.etcdURL)
		}
		switch {
		case e.f.baseline:
			args = append(args, "--check-port", strconv.Itoa(checkPort))
			l.writer, l.reader = "", ""
		case l.name == "lb3":
			args = append(args, "--prefix", "/galera", "--cluster-bind", clusterName+"="+l.front, "--check-port", "none",
				"--bind", l.writer) // listen galera is not rendered: every node is in a cluster under /galera
			l.writer, l.reader = "", ""
		default:
			// A wrong default check port: each node publishes its own.
			args = append(args, "--check-port", "9999", "--writer-bind", l.writer, "--reader-bind", l.reader,
				"--max-recv-queue", strconv.Itoa(e.f.maxRecv))
		}
		l.args = args
		if _, err := e.start("haconfd-"+l.name, nil, e.haconfd, args...); err != nil {
			return err
		}
		if i == 0 {
			if err := e.waitEtcd(); err != nil {
				return err
			}
		}
	}
	return nil
}

// waitEtcd waits for lb1's embedded etcd and connects the test's client.
func (e *env) waitEtcd() error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.etcdURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return err
	}
	e.etcd = cli
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cli.Get(ctx, "/")
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("embedded etcd at %s: %w (see %s)", e.etcdURL, err, filepath.Join(e.dir, "haconfd-lb1.log"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (e *env) startSidecars(n *node) {
	dsn := fmt.Sprintf("root@unix(%s)/", n.sock)
	args := []string{"register",
		"--etcd-endpoints", e.etcdURL, "--id", n.name, "--ip", n.ip, "--port", strconv.Itoa(mysqlPort),
		"--host", n.name, "--service-instance-name", "galera@" + strconv.Itoa(n.n),
		"--mysql-dsn", dsn, "--log-level", "debug"}
	checkArgs := []string{"check", "--listen", net.JoinHostPort(n.ip, strconv.Itoa(n.checkPort)), "--mysql-dsn", dsn}
	if !e.f.baseline {
		args = append(args, "--check-port", strconv.Itoa(n.checkPort), "--priority", n.priority)
		// haconfd decides about Donors (the last resort) and read-only
		// nodes (readers); the check says whether MySQL serves at all.
		checkArgs = append(checkArgs, "--available-when-donor", "--available-when-readonly")
	}
	if _, err := e.start(n.name+"-register", nil, e.haconfd, args...); err != nil {
		logf("%v", err)
	}
	if _, err := e.start(n.name+"-check", nil, e.haconfd, checkArgs...); err != nil {
		logf("%v", err)
	}
	if !e.f.baseline {
		e.severalnines(n)
	}
}

func (e *env) startNode(ctx context.Context, n *node, bootstrap bool) error {
	args := []string{"--defaults-file=" + n.cnf}
	if bootstrap {
		args = append(args, "--wsrep-new-cluster")
	}
	mariadbd := "/usr/sbin/mariadbd"
	p, err := e.start(n.name+"-mariadbd", &syscall.Credential{Uid: e.uid, Gid: e.gid, Groups: []uint32{}}, mariadbd, args...)
	if err != nil {
		return err
	}
	n.proc = p
	logf("%s: mariadbd started (pid %d)%s", n.name, p.cmd.Process.Pid, map[bool]string{true: " with --wsrep-new-cluster"}[bootstrap])
	return nil
}

func (e *env) stopNode(n *node, sig syscall.Signal) error {
	e.signalNode(n, sig)
	n.proc.wait(60 * time.Second)
	return nil
}

// signalNode sends sig to n's mariadbd and records it, without waiting.
func (e *env) signalNode(n *node, sig syscall.Signal) time.Time {
	kind := "stop"
	if sig == syscall.SIGKILL {
		kind = "kill"
	}
	at := e.event(n.name, kind)
	logf("%s: %s to mariadbd", n.name, sig)
	_ = n.proc.cmd.Process.Signal(sig)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		e.statePublished(n, kind, at)
	}()
	return at
}

// statePublished notes how long after at the node's published state
// (what its registrar, or Galera through haconfd notify, says in etcd)
// stopped being Synced.
func (e *env) statePublished(n *node, kind string, at time.Time) {
	key := "/components/galera/" + n.name + "/wsrep_local_state_comment"
	notify := "/components/galera/" + n.name + "/wsrep_notify"
	for time.Since(at) < 10*time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := e.etcd.Get(ctx, key)
		nresp, nerr := e.etcd.Get(ctx, notify)
		cancel()
		var via []string
		if err == nil && (len(resp.Kvs) == 0 || string(resp.Kvs[0].Value) != "Synced") {
			via = append(via, "registrar")
		}
		if nerr == nil && len(nresp.Kvs) > 0 && nresp.Kvs[0].ModRevision > 0 {
			var rec struct {
				Status string `json:"status"`
			}
			if json.Unmarshal(nresp.Kvs[0].Value, &rec) == nil && rec.Status != "" && rec.Status != "synced" {
				via = append(via, "notify ("+rec.Status+")")
			}
		}
		if len(via) > 0 {
			e.mu.Lock()
			e.notes = append(e.notes, summaryRow{fmt.Sprintf("%s %s: out in etcd", n.name, kind), fmt.Sprintf("%s after the signal, by %s", time.Since(at).Round(time.Millisecond), strings.Join(via, " and "))})
			e.mu.Unlock()
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitState polls the node (over its socket) until wsrep_local_state_comment
// is want.
func (e *env) waitState(ctx context.Context, n *node, want string, d time.Duration) error {
	deadline := time.Now().Add(d)
	last := ""
	for {
		qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		var name, val string
		err := n.db.QueryRowContext(qctx, "SHOW GLOBAL STATUS LIKE 'wsrep_local_state_comment'").Scan(&name, &val)
		cancel()
		if err == nil && val != last {
			logf("%s: %s", n.name, val)
			last = val
		}
		if err == nil && val == want {
			return nil
		}
		select {
		case <-n.proc.done:
			return fmt.Errorf("%s: mariadbd exited while waiting for %s (see %s)", n.name, want, filepath.Join(n.dir, "error.log"))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not %s within %s (last %q, err %v; see %s)", n.name, want, d, last, err, filepath.Join(n.dir, "error.log"))
		}
		if err := pause(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

func (e *env) createSchema(ctx context.Context) error {
	for _, q := range []string{
		fmt.Sprintf("CREATE USER IF NOT EXISTS '%s'@'%%' IDENTIFIED BY '%s'", appUser, appPassword),
		fmt.Sprintf("GRANT ALL ON e2e.* TO '%s'@'%%'", appUser),
		fmt.Sprintf("GRANT PROCESS ON *.* TO '%s'@'%%'", appUser),
		"CREATE DATABASE IF NOT EXISTS e2e",
		"CREATE TABLE IF NOT EXISTS e2e.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, worker INT, seq INT, node VARCHAR(16), at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))",
	} {
		if _, err := e.nodes[0].db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("node1: %s: %w", q, err)
		}
	}
	return nil
}

// waitUp waits until the galera backends of l's HAProxy have want
// servers UP (each section: lb3 has only its cluster's).
func (e *env) waitUp(ctx context.Context, l *lb, want int, d time.Duration) error {
	deadline := time.Now().Add(d)
	last := ""
	for {
		up, desc, err := serversUp(l.sock)
		if err == nil && desc != last {
			logf("%s haproxy: %s", l.name, desc)
			last = desc
		}
		if err == nil && up >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s haproxy: %d servers UP within %s, want %d (last %q, err %v; see %s)", l.name, up, d, want, last, err, filepath.Join(e.dir, "haconfd-"+l.name+".log"))
		}
		if err := pause(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// serversUp reads "show stat" from a HAProxy's runtime socket: the
// servers UP in its first proxy section, and every server's status.
func serversUp(sock string) (int, string, error) {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "show stat\n"); err != nil {
		return 0, "", err
	}
	up := 0
	first := ""
	var parts []string
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ",")
		if len(f) < 19 || strings.HasPrefix(f[0], "#") || f[1] == "FRONTEND" || f[1] == "BACKEND" {
			continue
		}
		if first == "" {
			first = f[0]
		}
		if f[0] != first {
			continue
		}
		parts = append(parts, f[1]+"="+f[17]+"/w"+f[18])
		if f[17] == "UP" {
			up++
		}
	}
	sort.Strings(parts)
	return up, first + ": " + strings.Join(parts, " "), sc.Err()
}

// record is one client operation through HAProxy.
type record struct {
	at    time.Time // when the operation began (connect)
	end   time.Time // when it ended: errors count in the step they happen in
	node  string    // @@wsrep_node_name of the server that answered
	state string    // its wsrep_local_state_comment at that moment
	err   string
}

type client struct {
	db      *sql.DB
	workers int
	mu      sync.Mutex
	recs    []record
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func newClient(front string, workers int) (*client, error) {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr, cfg.DBName = appUser, appPassword, "tcp", front, "e2e"
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 5*time.Second, 15*time.Second, 15*time.Second
	conn, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, err
	}
	db := sql.OpenDB(conn)
	// A new connection per operation, so that every operation is routed
	// by HAProxy anew.
	db.SetMaxIdleConns(-1)
	return &client{db: db, workers: workers}, nil
}

func (c *client) start(ctx context.Context) {
	ctx, c.cancel = context.WithCancel(ctx)
	for w := range c.workers {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			for seq := 0; ctx.Err() == nil; seq++ {
				r := c.op(ctx, w, seq)
				r.end = time.Now()
				if ctx.Err() != nil {
					return
				}
				c.mu.Lock()
				c.recs = append(c.recs, r)
				c.mu.Unlock()
				_ = pause(ctx, 10*time.Millisecond)
			}
		}()
	}
}

func (c *client) op(ctx context.Context, worker, seq int) record {
	r := record{at: time.Now()}
	octx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	conn, err := c.db.Conn(octx)
	if err != nil {
		r.err = oneLine(err)
		return r
	}
	defer conn.Close()
	err = conn.QueryRowContext(octx, "SELECT @@wsrep_node_name, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_LOCAL_STATE_COMMENT'").Scan(&r.node, &r.state)
	if err != nil {
		r.err = oneLine(err)
		return r
	}
	if _, err := conn.ExecContext(octx, "INSERT INTO t (worker, seq, node) VALUES (?, ?, ?)", worker, seq, r.node); err != nil {
		r.err = oneLine(err)
	}
	return r
}

func oneLine(err error) string { return firstLine(err.Error()) }

// waitServed waits until a query made after since is served by node.
func (c *client) waitServed(ctx context.Context, node string, since time.Time, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c.mu.Lock()
		for i := len(c.recs) - 1; i >= 0 && c.recs[i].at.After(since); i-- {
			if c.recs[i].node == node && c.recs[i].err == "" {
				c.mu.Unlock()
				return nil
			}
		}
		c.mu.Unlock()
		if time.Now().After(deadline) {
			return fmt.Errorf("no query served by %s within %s", node, d)
		}
		if err := pause(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

func (c *client) stop() {
	if c.cancel != nil {
		c.cancel()
	}
	c.wg.Wait()
}

func (c *client) close() {
	c.stop()
	c.db.Close()
}

func (c *client) records() []record {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := append([]record(nil), c.recs...)
	sort.Slice(out, func(i, j int) bool { return out[i].at.Before(out[j].at) })
	return out
}

// monitor polls every node's wsrep_local_state_comment over its socket
// and keeps the transitions.
type monitor struct {
	mu     sync.Mutex
	trans  map[string][]transition
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type transition struct {
	at    time.Time
	state string
}

func (e *env) monitor(ctx context.Context) *monitor {
	m := &monitor{trans: map[string][]transition{}}
	ctx, m.cancel = context.WithCancel(ctx)
	for _, n := range e.nodes {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			last := ""
			for ctx.Err() == nil {
				at := time.Now()
				qctx, cancel := context.WithTimeout(ctx, time.Second)
				var name, val string
				err := n.db.QueryRowContext(qctx, "SHOW GLOBAL STATUS LIKE 'wsrep_local_state_comment'").Scan(&name, &val)
				cancel()
				if err != nil {
					val = "(down)"
				}
				if val != last {
					m.mu.Lock()
					m.trans[n.name] = append(m.trans[n.name], transition{at, val})
					m.mu.Unlock()
					last = val
				}
				_ = pause(ctx, 20*time.Millisecond)
			}
		}()
	}
	return m
}

func (m *monitor) stop() { m.cancel(); m.wg.Wait() }

// othersSynced reports whether a node other than node was Synced at t
// (as the monitor last saw each one before t): when none was, a node that
// leaves Synced is the last resort and keeps serving on purpose.
func (m *monitor) othersSynced(node string, t time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for other, trs := range m.trans {
		if other == node {
			continue
		}
		state := ""
		for _, tr := range trs {
			if tr.at.After(t) {
				break
			}
			state = tr.state
		}
		if state == "Synced" {
			return true
		}
	}
	return false
}

// leftSynced is the first time the monitor saw node in a state other than
// Synced in (after, before], allowing for its polling lag.
func (m *monitor) leftSynced(node string, after, before time.Time) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, tr := range m.trans[node] {
		if tr.at.After(after) && !tr.at.After(before.Add(100*time.Millisecond)) && tr.state != "Synced" {
			if tr.at.After(before) {
				return before, true
			}
			return tr.at, true
		}
	}
	return time.Time{}, false
}

// dump writes every record as CSV.
func (c *client) dump(path string) error {
	var b strings.Builder
	b.WriteString("at,node,state,error\n")
	for _, r := range c.records() {
		fmt.Fprintf(&b, "%s,%s,%s,%q\n", r.at.Format("15:04:05.000000"), r.node, r.state, r.err)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
