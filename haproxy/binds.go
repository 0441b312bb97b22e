package haproxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"
)

// maxPortRange bounds how many ports of one "bind a:p1-p2" are pre-checked.
const maxPortRange = 1024

// parseBinds returns the TCP addresses ("host:port", ready for net.Listen)
// of every bind line in cfg, in order, without duplicates. Unix sockets,
// abstract namespaces, inherited fds, UDP/QUIC and addresses using
// environment variables are skipped.
func parseBinds(cfg []byte) []string {
	var out []string
	seen := make(map[string]bool)
	sc := bufio.NewScanner(bytes.NewReader(cfg))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "bind" {
			continue
		}
		for _, a := range strings.Split(strings.Trim(f[1], `"'`), ",") {
			for _, addr := range bindAddrs(strings.TrimSpace(a)) {
				if !seen[addr] {
					seen[addr] = true
					out = append(out, addr)
				}
			}
		}
	}
	return out
}

// bindAddrs turns one bind address (possibly with a port range) into
// net.Listen addresses; nil when it is not a TCP address.
func bindAddrs(a string) []string {
	if a == "" || strings.HasPrefix(a, "/") || strings.Contains(a, "$") {
		return nil
	}
	if i := strings.IndexByte(a, '@'); i >= 0 {
		switch strings.ToLower(a[:i]) {
		case "ipv4", "ipv6", "tcp", "tcp4", "tcp6":
			a = a[i+1:]
		default: // unix@, abns@, fd@, sockpair@, udp@, quic4@, ...
			return nil
		}
	}
	var host, ports string
	if strings.HasPrefix(a, "[") {
		end := strings.Index(a, "]:")
		if end < 0 {
			return nil
		}
		host, ports = a[1:end], a[end+2:]
	} else {
		i := strings.LastIndexByte(a, ':')
		if i < 0 {
			return nil
		}
		host, ports = a[:i], a[i+1:]
	}
	if host == "" || host == "*" {
		host = "0.0.0.0"
	}
	lo, hi, ok := parsePortRange(ports)
	if !ok {
		return nil
	}
	if hi-lo >= maxPortRange {
		hi = lo + maxPortRange - 1
	}
	out := make([]string, 0, hi-lo+1)
	for p := lo; p <= hi; p++ {
		out = append(out, net.JoinHostPort(host, strconv.Itoa(p)))
	}
	return out
}

func parsePortRange(s string) (lo, hi int, ok bool) {
	a, b, isRange := strings.Cut(s, "-")
	lo, err := strconv.Atoi(a)
	if err != nil || lo < 1 || lo > 65535 {
		return 0, 0, false
	}
	if !isRange {
		return lo, lo, true
	}
	hi, err = strconv.Atoi(b)
	if err != nil || hi < lo || hi > 65535 {
		return 0, 0, false
	}
	return lo, hi, true
}

// overlaps reports whether binding a would conflict with an existing bind b
// (same port, and same host or either one a wildcard).
func overlaps(a, b string) bool {
	ah, ap, err1 := net.SplitHostPort(a)
	bh, bp, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || ap != bp {
		return false
	}
	return ah == bh || isWildcard(ah) || isWildcard(bh)
}

func isWildcard(h string) bool { return h == "0.0.0.0" || h == "::" || h == "" }

// checkBinds tries to listen on every address of next that the live
// configuration (held by the running HAProxy) does not already cover.
// live is nil when HAProxy is not running: then every address is checked.
func checkBinds(next, live []byte) error {
	liveAddrs := parseBinds(live)
	for _, addr := range parseBinds(next) {
		l, err := net.Listen("tcp", addr)
		if err == nil {
			if cerr := l.Close(); cerr != nil {
				return fmt.Errorf("bind pre-check %s: close: %w", addr, cerr)
			}
			continue
		}
		held := false
		for _, la := range liveAddrs {
			if overlaps(addr, la) {
				held = true // the running HAProxy holds it; the new one inherits it with -x
				break
			}
		}
		if !held {
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("%w: %s", ErrBindInUse, addr)
			}
			return fmt.Errorf("%w: %s (%v)", ErrBindInUse, addr, err)
		}
	}
	return nil
}
