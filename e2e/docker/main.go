// Command docker is haconfd's container end-to-end test (`make e2e-docker`,
// via run.sh, as root on a machine with a Docker engine and no registry):
//
//   - images: the base images the Dockerfile starts FROM
//     (base-images.sh: debootstrap + docker import), the haconfd image from
//     the repository's Dockerfile (its size is printed), and stand-ins for
//     the images the examples pull (etcd, MariaDB, HAProxy: Debian's
//     packages; a static TCP backend);
//   - supervise: etcd, the haconfd image (HAProxy inside, uid 10001, tini
//     as PID 1) and three backends registered by `haconfd register`
//     sidecars on a private network; a client on the host through the
//     published port; nodes added and removed through the runtime API,
//     the HEALTHCHECK healthy and unhealthy without etcd, `docker stop` and
//     start of haconfd, `docker kill` of the backends one by one;
//   - sidecar: examples/compose/haproxy-sidecar.yml (docker-compose, with
//     e2e/docker/compose/sidecar.override.yml for the local images): a
//     structural change reloads HAProxy through --reload-cmd;
//   - compose: examples/compose/docker-compose.yml with three real MariaDB
//     Galera nodes, SQL through HAProxy, `docker-compose stop` of a node,
//     down.
//
// Every container, network and volume carries the label org.haconfd.e2e and
// is removed at the end, also on failure. It prints the time of each step
// and the failed connections of each phase, and fails when a rule is broken.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

func main() { os.Exit(run()) }

type options struct {
	only       []string
	skipImages bool
	work       string
}

// env is one run: what it made, what it measured.
type env struct {
	opt      options
	root     string // the repository
	work     string // logs
	began    time.Time
	projects []compose // compose projects up (taken down in the cleanup)

	mu    sync.Mutex
	steps []stepRow
	conns []connRow
	facts []fact
}

type stepRow struct {
	scenario, name string
	took           time.Duration
	note           string
	err            error
}

type connRow struct {
	scenario, phase string
	c               counts
	wantZero        bool
	note            string
}

type fact struct{ what, value string }

func logf(format string, a ...any) {
	fmt.Printf("%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

func run() int {
	var opt options
	only := flag.String("only", "images,supervise,sidecar,compose", "steps to run, comma-separated (images,supervise,sidecar,compose)")
	flag.BoolVar(&opt.skipImages, "skip-images", false, "use the images a previous run built (implied when images is not in -only)")
	flag.StringVar(&opt.work, "work", "", "directory for logs (default: a new temp dir, removed on success)")
	flag.Parse()
	for _, s := range strings.Split(*only, ",") {
		s = strings.TrimSpace(s)
		if !slices.Contains([]string{"images", "supervise", "sidecar", "compose"}, s) {
			fmt.Fprintf(os.Stderr, "e2e-docker: -only %q: %q is not one of images, supervise, sidecar, compose\n", *only, s)
			return 2
		}
		opt.only = append(opt.only, s)
	}
	// The driver logs a broken connection to a stopping node by itself.
	_ = mysql.SetLogger(log.New(io.Discard, "", 0))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	e := &env{opt: opt, began: time.Now()}
	var err error
	if e.root, err = filepath.Abs("."); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if _, err := os.Stat(filepath.Join(e.root, "Dockerfile")); err != nil {
		fmt.Fprintln(os.Stderr, "e2e-docker: run from the repository root (no Dockerfile here)")
		return 2
	}
	e.work = opt.work
	if e.work == "" {
		if e.work, err = os.MkdirTemp("", "hc-e2e-docker"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	} else if err := os.MkdirAll(e.work, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("e2e-docker: logs in %s\n", e.work)

	// Leftovers of a run that died (runs are serialized by run.sh).
	cctx := context.WithoutCancel(ctx)
	if what, err := sweep(cctx); err != nil || what != "" {
		logf("removed leftovers of an earlier run: %s %v", what, err)
	}

	runErr := e.all(ctx)
	if runErr != nil {
		saveLogs(cctx, e.work)
	}
	t0 := time.Now()
	for _, c := range e.projects {
		if _, err := c.run(cctx, 3*time.Minute, "down", "-v", "--remove-orphans", "-t", "10"); err != nil {
			logf("cleanup: %v", err)
		}
	}
	what, serr := sweep(cctx)
	left, lerr := leftovers(cctx)
	e.addStep("", "cleanup (remove everything labelled "+label+")", time.Since(t0), what, errors.Join(serr, lerr))
	if left != "" {
		runErr = errors.Join(runErr, fmt.Errorf("left behind after the cleanup: %s", left))
	}
	e.printSummary()
	if runErr != nil {
		fmt.Fprintf(os.Stderr, "\nFAIL:\n%v\nlogs of every container in %s\n", runErr, e.work)
		return 1
	}
	if opt.work == "" {
		os.RemoveAll(e.work)
	}
	fmt.Printf("\nPASS (%s in all)\n", time.Since(e.began).Round(time.Second))
	return 0
}

func (e *env) wants(step string) bool { return slices.Contains(e.opt.only, step) }

// all runs the steps; a scenario's failure does not stop the next one.
func (e *env) all(ctx context.Context) error {
	if e.wants("images") && !e.opt.skipImages {
		if err := e.images(ctx); err != nil {
			return fmt.Errorf("images: %w", err)
		}
	}
	var errs []error
	for _, s := range []struct {
		name string
		run  func(context.Context) error
	}{{"supervise", e.supervise}, {"sidecar", e.sidecar}, {"compose", e.compose}} {
		if !e.wants(s.name) {
			continue
		}
		if ctx.Err() != nil {
			return errors.Join(append(errs, ctx.Err())...)
		}
		logf("===== %s", s.name)
		if err := s.run(ctx); err != nil {
			logf("%s FAILED: %v", s.name, err)
			errs = append(errs, fmt.Errorf("%s: %w", s.name, err))
		}
	}
	return errors.Join(errs...)
}

func (e *env) addStep(scenario, name string, took time.Duration, note string, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.steps = append(e.steps, stepRow{scenario, name, took, note, err})
}

// step times f as one row of the table.
func (e *env) step(scenario, name string, f func() (string, error)) error {
	logf("STEP %s: %s", scenario, name)
	t0 := time.Now()
	note, err := f()
	e.addStep(scenario, name, time.Since(t0), note, err)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if note != "" {
		logf("     %s", note)
	}
	return nil
}

// phase times f like step and counts the load's operations meanwhile;
// wantZero makes any failed one an error.
func (e *env) phase(scenario, name string, l *load, wantZero bool, f func() (string, error)) error {
	before := l.counts()
	_ = l.takeFirstErr()
	err := e.step(scenario, name, f)
	after := l.counts()
	c := counts{after.ok - before.ok, after.fail - before.fail}
	first := l.takeFirstErr()
	note := ""
	if c.fail > 0 {
		note = "first: " + first
	}
	e.mu.Lock()
	e.conns = append(e.conns, connRow{scenario, name, c, wantZero, note})
	e.mu.Unlock()
	logf("     %d ok, %d failed %s", c.ok, c.fail, note)
	if err != nil {
		return err
	}
	if wantZero && c.fail > 0 {
		return fmt.Errorf("%s: %d of %d connections failed (want 0; first: %s)", name, c.fail, c.ok+c.fail, first)
	}
	if c.ok == 0 && wantZero {
		return fmt.Errorf("%s: no connection succeeded", name)
	}
	return nil
}

func (e *env) note(what, format string, a ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.facts = append(e.facts, fact{what, fmt.Sprintf(format, a...)})
}

func (e *env) printSummary() {
	fmt.Printf("\nSTEPS\n%-10s %-62s %9s  %s\n", "scenario", "step", "time", "note")
	for _, s := range e.steps {
		note := s.note
		if s.err != nil {
			note = "FAILED: " + firstLine(s.err.Error())
		}
		fmt.Printf("%-10s %-62s %9s  %s\n", s.scenario, s.name, s.took.Round(100*time.Millisecond), note)
	}
	fmt.Printf("%-10s %-62s %9s\n", "", "e2e-docker in all", time.Since(e.began).Round(time.Second))
	fmt.Printf("\nCONNECTIONS (through HAProxy's published port on 127.0.0.1)\n%-10s %-62s %7s %7s  %s\n", "scenario", "phase", "ok", "failed", "")
	for _, c := range e.conns {
		rule := "(counted)"
		if c.wantZero {
			rule = "(must be 0)"
		}
		fmt.Printf("%-10s %-62s %7d %7d  %s %s\n", c.scenario, c.phase, c.c.ok, c.c.fail, rule, c.note)
	}
	if len(e.facts) > 0 {
		fmt.Printf("\nFACTS\n")
		for _, f := range e.facts {
			fmt.Printf("  %-58s %s\n", f.what, f.value)
		}
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// freePort asks the kernel for a free port on 127.0.0.1.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, p, err := net.SplitHostPort(l.Addr().String())
	return p, err
}
