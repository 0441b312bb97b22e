package haproxy

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// StatRow is one server's line of "show stat" (the CSV of HAProxy's stats
// page): what HAProxy itself says of the server now.
type StatRow struct {
	Proxy  string `json:"proxy"`  // pxname: the backend or listen section
	Server string `json:"server"` // svname
	// Status is HAProxy's word: UP, DOWN, MAINT, DRAIN, NOLB, "no check",
	// with a transition ("UP 1/3", "DOWN 1/2") or a cause ("MAINT (via
	// b/s)", "MAINT (resolution)").
	Status      string `json:"status"`
	Sessions    int    `json:"sessions"`       // scur: current sessions
	MaxSessions int    `json:"max_sessions"`   // smax
	Total       int64  `json:"total_sessions"` // stot: sessions since start
	Weight      int    `json:"weight"`         // effective weight
	CheckStatus string `json:"check_status"`   // check_status: L4OK, L4CON, L7STS, ... ("" without checks)
	CheckDesc   string `json:"check_desc"`     // last_chk: the last check's detail ("Connection refused")
	LastChange  int64  `json:"last_change_s"`  // lastchg: seconds since the last UP/DOWN change (-1 unknown)
	Addr        string `json:"addr"`           // addr: ip:port (HAProxy 1.9+)
}

// ParseStat reads the reply of "show stat" (CSV, a "# pxname,svname,..."
// header naming the columns). Columns are found by name, so older and
// newer HAProxy versions read the same; lines other than servers
// (FRONTEND, BACKEND) are left out.
func ParseStat(reply string) ([]StatRow, error) {
	head, body, ok := strings.Cut(strings.TrimLeft(reply, "\n"), "\n")
	h, isHeader := strings.CutPrefix(head, "# ")
	if !ok && !isHeader {
		return nil, fmt.Errorf("show stat: empty reply")
	}
	if !isHeader {
		return nil, fmt.Errorf("show stat: no header line, got %q", firstLine(head))
	}
	col := map[string]int{}
	for i, name := range strings.Split(h, ",") {
		if _, dup := col[name]; !dup && name != "" {
			col[name] = i
		}
	}
	for _, need := range []string{"pxname", "svname", "status", "scur"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("show stat: no %s column", need)
		}
	}
	r := csv.NewReader(strings.NewReader(body))
	r.FieldsPerRecord = -1
	r.LazyQuotes = true
	r.ReuseRecord = true
	var out []StatRow
	for {
		f, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("show stat: %w", err)
		}
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(f) {
				return f[i]
			}
			return ""
		}
		sv := get("svname")
		if sv == "FRONTEND" || sv == "BACKEND" || get("pxname") == "" {
			continue
		}
		row := StatRow{Proxy: get("pxname"), Server: sv, Status: get("status"), CheckStatus: get("check_status"),
			CheckDesc: get("last_chk"), Addr: get("addr"), LastChange: -1}
		ints := []struct {
			name string
			to   *int
		}{{"scur", &row.Sessions}, {"smax", &row.MaxSessions}, {"weight", &row.Weight}}
		for _, c := range ints {
			if v := get(c.name); v != "" {
				n, err := strconv.Atoi(v)
				if err != nil {
					return nil, fmt.Errorf("show stat %s/%s: %s %q is not a number", row.Proxy, sv, c.name, v)
				}
				*c.to = n
			}
		}
		for name, to := range map[string]*int64{"stot": &row.Total, "lastchg": &row.LastChange} {
			if v := get(name); v != "" {
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("show stat %s/%s: %s %q is not a number", row.Proxy, sv, name, v)
				}
				*to = n
			}
		}
		out = append(out, row)
	}
}

// Stat reads "show stat" for every server of the running HAProxy (type 4:
// servers only).
func (r *Runtime) Stat() ([]StatRow, error) {
	reply, err := r.Exec("show stat -1 4 -1")
	if err != nil {
		return nil, err
	}
	return ParseStat(reply)
}
