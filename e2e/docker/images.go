package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// images makes every image the scenarios run: the base images (no
// registry), then, at the same time, the haconfd image from the
// Dockerfile (CPU-bound: go build) and the stand-ins (mostly apt downloads).
func (e *env) images(ctx context.Context) error {
	const scn = "images"
	err := e.step(scn, "base images (debootstrap root, docker import, builder)", func() (string, error) {
		log := filepath.Join(e.work, "base-images.log")
		if err := logged(ctx, 15*time.Minute, log, e.root, nil, "bash", "e2e/docker/base-images.sh"); err != nil {
			return "", err
		}
		b, _ := os.ReadFile(log)
		return baseNote(string(b)), nil
	})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	var buildErr, auxErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		buildErr = e.step(scn, "docker build . (the Dockerfile, as is)", func() (string, error) {
			return e.buildHaconfd(ctx)
		})
	}()
	go func() {
		defer wg.Done()
		auxErr = e.step(scn, "stand-ins: etcd, haproxy, mariadb, backend (in parallel)", func() (string, error) {
			return e.buildStandIns(ctx)
		})
	}()
	wg.Wait()
	return errors.Join(buildErr, auxErr)
}

// baseNote: which images base-images.sh made and which were up to date.
func baseNote(log string) string {
	var parts []string
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.Contains(l, "root ready in"):
			parts = append(parts, "debootstrap: "+l[strings.Index(l, "root ready in")+len("root ready "):])
		case strings.Contains(l, "is up to date"), strings.Contains(l, "imported in"), strings.Contains(l, " built in "), strings.Contains(l, "left alone"):
			_, rest, _ := strings.Cut(l, "base-images: ")
			parts = append(parts, rest)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return strings.Join(parts, "; ")
}

func imageID(ctx context.Context, ref string) string {
	id, err := docker(ctx, 20*time.Second, "image", "inspect", "-f", "{{.Id}}", ref)
	if err != nil {
		return ""
	}
	return id
}

// replaced removes the image a tag named before a rebuild, once nothing
// names it (the classic builder leaves it dangling otherwise).
func replaced(ctx context.Context, ref, old string) {
	if old != "" && imageID(ctx, ref) != old {
		_, _ = docker(ctx, time.Minute, "rmi", old)
	}
}

var (
	stepFrom  = regexp.MustCompile(`^Step \d+/\d+ : FROM `)
	stepImage = regexp.MustCompile(`^ ---> ([0-9a-f]{12})$`)
)

// buildHaconfd builds the repository's Dockerfile unchanged, with the host's
// network (the build downloads Go modules and Debian packages).
func (e *env) buildHaconfd(ctx context.Context) (string, error) {
	old := imageID(ctx, imgHaconfd)
	log := filepath.Join(e.work, "docker-build.log")
	if err := logged(ctx, 20*time.Minute, log, e.root, nil, "docker", "build", "--network", "host",
		"--build-arg", "VERSION=e2e", "-t", imgHaconfd, "."); err != nil {
		return "", err
	}
	replaced(ctx, imgHaconfd, old)
	// The build stage's last image (Go's caches, ~1 GB) is no parent of
	// the result: keep the newest one under a tag (the next build of the
	// same source reuses it), drop the one it replaces.
	if b, err := os.ReadFile(log); err == nil {
		last, stage := "", ""
		for _, l := range strings.Split(string(b), "\n") {
			if m := stepImage.FindStringSubmatch(l); m != nil {
				last = m[1]
			}
			if stepFrom.MatchString(l) && last != "" && stage == "" {
				stage = last
			}
		}
		if stage != "" {
			oldStage := imageID(ctx, imgBuildStage)
			if _, err := docker(ctx, time.Minute, "tag", stage, imgBuildStage); err == nil {
				replaced(ctx, imgBuildStage, oldStage)
			}
		}
	}
	size, err := docker(ctx, 20*time.Second, "image", "inspect", "-f", "{{.Size}}", imgHaconfd)
	if err != nil {
		return "", err
	}
	n, _ := strconv.ParseInt(size, 10, 64)
	e.note("image "+imgHaconfd+" size", "%.1f MB (%d bytes)", float64(n)/1e6, n)
	return fmt.Sprintf("image %.1f MB", float64(n)/1e6), nil
}

// buildStandIns builds the images that stand in for registry images, and
// the backend: a static binary, the only file of its image.
func (e *env) buildStandIns(ctx context.Context) (string, error) {
	var wg sync.WaitGroup
	errs := make([]error, 4)
	took := make([]string, 4)
	for i, img := range []struct{ ref, dir string }{
		{imgEtcd, "etcd"}, {imgHAProxy, "haproxy"}, {imgMariaDB, "mariadb"},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t0 := time.Now()
			old := imageID(ctx, img.ref)
			errs[i] = logged(ctx, 15*time.Minute, filepath.Join(e.work, "build-"+img.dir+".log"), e.root, nil,
				"docker", "build", "--network", "host", "-t", img.ref, filepath.Join("e2e/docker/images", img.dir))
			replaced(ctx, img.ref, old)
			took[i] = fmt.Sprintf("%s %s", img.dir, time.Since(t0).Round(time.Second))
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t0 := time.Now()
		errs[3] = e.buildBackend(ctx)
		took[3] = fmt.Sprintf("backend %s", time.Since(t0).Round(time.Second))
	}()
	wg.Wait()
	return strings.Join(took, ", "), errors.Join(errs...)
}

func (e *env) buildBackend(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "hc-e2e-backend")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := logged(ctx, 5*time.Minute, filepath.Join(e.work, "build-backend.log"), e.root, []string{"CGO_ENABLED=0"},
		"go", "build", "-o", filepath.Join(dir, "backend"), "./e2e/docker/backend"); err != nil {
		return err
	}
	old := imageID(ctx, imgBackend)
	_, err = command(ctx, 2*time.Minute, nil, "bash", "-c",
		fmt.Sprintf(`tar -C %q -c backend | docker import --change 'ENTRYPOINT ["/backend"]' - %s`, dir, imgBackend))
	replaced(ctx, imgBackend, old)
	return err
}
