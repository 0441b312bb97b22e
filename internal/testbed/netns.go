package testbed

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"strings"
)

// FreeSubnet returns a 10.213.X /24 that no route or address of the root
// namespace overlaps, for test hosts in network namespaces (e2e-vip,
// make chaos).
func FreeSubnet() (string, error) {
	var used []*net.IPNet
	for _, args := range [][]string{{"-4", "-o", "route", "show", "table", "all"}, {"-4", "-o", "addr", "show"}} {
		out, err := exec.Command("ip", args...).Output()
		if err != nil {
			return "", fmt.Errorf("ip %s: %w", strings.Join(args, " "), err)
		}
		for _, f := range strings.Fields(string(out)) {
			if _, n, err := net.ParseCIDR(f); err == nil {
				used = append(used, n)
			} else if ip := net.ParseIP(f); ip != nil && ip.To4() != nil {
				used = append(used, &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)})
			}
		}
	}
	start := rand.IntN(250)
	for i := range 250 {
		x := (start+i)%250 + 3
		_, cand, _ := net.ParseCIDR(fmt.Sprintf("10.213.%d.0/24", x))
		free := true
		for _, u := range used {
			if u.Contains(cand.IP) || cand.Contains(u.IP) {
				free = false
				break
			}
		}
		if free {
			return fmt.Sprintf("10.213.%d", x), nil
		}
	}
	return "", errors.New("no free /24 in 10.213.0.0/16")
}
