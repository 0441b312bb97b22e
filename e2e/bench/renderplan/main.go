// Command renderplan is `haconfd render --plan --from-file` with a stop
// watch, for make bench: it takes haconfd's own flags, renders the
// snapshot and plans it against the live --output file, and prints on
// stderr
//
//	render_plan=<duration>       the first render + plan of a fresh process
//	render_plan_warm=<duration>  the median of 5 more, as a running daemon
//	                             renders a change (templates parsed, heap grown)
//	peak_rss_kib=<KiB>           the process's own high-water mark (VmHWM)
//
// and the plan's runtime commands as JSON on stdout. It lives here, not
// in haconfd, so that the shipped binary carries no bench hooks.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/haconfd/haconfd/haproxy"
	"github.com/haconfd/haconfd/internal/app"
	"github.com/haconfd/haconfd/internal/config"
	"github.com/haconfd/haconfd/watch"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "renderplan:", err)
		os.Exit(2)
	}
}

func run(args []string) error {
	fs := pflag.NewFlagSet("renderplan", pflag.ContinueOnError)
	config.AddFlags(fs)
	from := fs.String("from-file", "", "snapshot (JSON) to render")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := config.Load(fs, nil)
	if err != nil {
		return err
	}
	t0 := time.Now()
	snap, err := watch.ReadSnapshotFile(*from)
	if err != nil {
		return err
	}
	live, err := os.ReadFile(cfg.Output)
	if err != nil {
		return err
	}
	rend, err := app.NewRenderer(cfg)
	if err != nil {
		return err
	}
	renderPlan := func() (haproxy.Plan, error) {
		out, err := rend.Render(app.RenderInput(snap))
		if err != nil {
			return haproxy.Plan{}, err
		}
		return haproxy.PlanChange(live, out.Config, haproxy.Caps{})
	}
	plan, err := renderPlan()
	if err != nil {
		return err
	}
	cold := time.Since(t0)
	var warm []time.Duration
	for range 5 {
		t := time.Now()
		if _, err := renderPlan(); err != nil {
			return err
		}
		warm = append(warm, time.Since(t))
	}
	slices.Sort(warm)
	kib, err := peakRSS()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "render_plan=%s\nrender_plan_warm=%s\npeak_rss_kib=%d\n", cold, warm[len(warm)/2], kib)
	return json.NewEncoder(os.Stdout).Encode(plan)
}

// peakRSS is VmHWM from /proc/self/status, in KiB: the rusage of a child
// started with vfork, as Go starts them, would count the bench's memory.
func peakRSS() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kib int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kib); err == nil {
				return kib, nil
			}
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}
