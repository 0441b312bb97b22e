package confd

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/pelletier/go-toml/v2"
)

// ErrInvalidResource is wrapped by LoadResources for a conf.d file that
// cannot be used.
var ErrInvalidResource = errors.New("invalid template resource")

// Resource is one conf.d/*.toml template resource (its [template] table).
type Resource struct {
	Name string // the .toml file, relative to conf.d ("haproxy.toml")
	File string // the .toml file's full path

	Src       string   // the template's full path: confdir/templates/<src>
	Dest      string   // the file to write
	Keys      []string // keys relative to the prefix, as written
	Prefix    string   // the resource's own prefix, as written (see KeyPrefix)
	Owner     string   // haconfd extension: user name or uid, optionally ":group"; used when uid/gid are not set
	Mode      string   // as written: parsed like confd (strconv.ParseUint(mode, 0, 32)); "" keeps dest's mode or 0644
	UID, GID  int      // -1 when not set: the owner's, else the effective uid/gid
	CheckCmd  string   // run with {{.src}} = the staged file before it replaces Dest
	ReloadCmd string   // run after Dest changed; may use {{.src}} and {{.dest}} (both Dest)

	// Warnings are notes for the operator about this resource: log them
	// at start.
	Warnings []string
}

// KeyPrefix is the prefix the resource's keys are under, as confd 0.16
// computes it: the global prefix when it is set (it replaces, not joins,
// the resource's prefix), else the resource's; "/" is put in front when
// missing, and "" is "/".
func (r Resource) KeyPrefix(g Global) string {
	p := r.Prefix
	if g.Prefix != "" {
		p = g.Prefix
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	return p
}

// WatchPrefixes are the absolute etcd prefixes of the resource's keys
// (KeyPrefix joined with each key, path-cleaned), sorted and unique. A
// key is fetched with everything below it, as confd's etcd v3 client does.
func (r Resource) WatchPrefixes(g Global) []string {
	prefix := r.KeyPrefix(g)
	set := make(map[string]bool, len(r.Keys))
	for _, k := range r.Keys {
		set[path.Join(prefix, k)] = true
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// KeySpace is what the resource's template sees: of all (absolute etcd
// keys), the keys equal to or below one of WatchPrefixes ("/app" takes
// "/app" and "/app/x", not "/application"), with KeyPrefix cut off and
// "/" put in front, as confd does (prefix "/production": "/production/db/ip"
// is "/db/ip" in the template). Two keys that become the same path keep
// the value of the one that sorts last.
func (r Resource) KeySpace(g Global, all map[string]string) map[string]string {
	prefix := r.KeyPrefix(g)
	roots := r.WatchPrefixes(g)
	keys := make([]string, 0, len(all))
	for k := range all {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make(map[string]string)
	for _, k := range keys {
		if !underAny(k, roots) {
			continue
		}
		out[path.Join("/", strings.TrimPrefix(k, prefix))] = all[k]
	}
	return out
}

func underAny(key string, roots []string) bool {
	for _, root := range roots {
		dir := root
		if !strings.HasSuffix(dir, "/") {
			dir += "/"
		}
		if key == root || strings.HasPrefix(key, dir) {
			return true
		}
	}
	return false
}

// resourceFile is the TOML of a conf.d file.
type resourceFile struct {
	Template map[string]any `toml:"template"`
}

// LoadResources reads every template resource under confdir/conf.d, as
// confd does: recursively, every file whose name ends in "toml", in
// lexical order of path. Src is taken relative to confdir/templates and
// must exist. A file that cannot be used gives an error naming the file
// and the field; the others are still returned (confd carries on with
// them), so the error may be treated as fatal or logged. No conf.d
// directory or no resources in it is an error too.
func LoadResources(confdir string, g Global) ([]Resource, error) {
	confd := filepath.Join(confdir, "conf.d")
	tmplDir := filepath.Join(confdir, "templates")
	var files []string
	err := filepath.WalkDir(confd, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			if ok, _ := filepath.Match("*toml", d.Name()); ok {
				files = append(files, p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load template resources: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: no *.toml files in %s", ErrInvalidResource, confd)
	}
	var out []Resource
	var errs []error
	for _, f := range files {
		rel, _ := filepath.Rel(confd, f)
		r, err := loadResource(f, rel, tmplDir)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, r)
	}
	warnShared(out)
	for i := range out {
		if g.Prefix != "" && out[i].Prefix != "" && out[i].Prefix != g.Prefix {
			out[i].Warnings = append(out[i].Warnings, fmt.Sprintf("%s: prefix %q is replaced by the global prefix %q, as in confd",
				out[i].File, out[i].Prefix, g.Prefix))
		}
	}
	return out, errors.Join(errs...)
}

// warnShared notes destinations written by more than one resource.
func warnShared(rs []Resource) {
	byDest := make(map[string][]int)
	for i, r := range rs {
		byDest[filepath.Clean(r.Dest)] = append(byDest[filepath.Clean(r.Dest)], i)
	}
	for dest, idx := range byDest {
		if len(idx) < 2 {
			continue
		}
		var names []string
		for _, i := range idx {
			names = append(names, rs[i].Name)
		}
		msg := fmt.Sprintf("%s are all written to %s: each run writes them in turn and the last one wins, as in confd",
			strings.Join(names, ", "), dest)
		rs[idx[len(idx)-1]].Warnings = append(rs[idx[len(idx)-1]].Warnings, msg)
	}
}

func loadResource(file, name, tmplDir string) (Resource, error) {
	bad := func(field string, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s: %s", ErrInvalidResource, file, field, fmt.Sprintf(format, args...))
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return Resource{}, fmt.Errorf("%w: %v", ErrInvalidResource, err)
	}
	var rf map[string]any
	if err := toml.Unmarshal(b, &rf); err != nil {
		return Resource{}, fmt.Errorf("%w: %s: %v", ErrInvalidResource, file, tomlError(err))
	}
	r := Resource{Name: name, File: file, UID: -1, GID: -1}
	for k := range rf {
		if !strings.EqualFold(k, "template") {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s: unknown table or key %q ignored", file, k))
		}
	}
	var tbl map[string]any
	for k, v := range rf {
		if strings.EqualFold(k, "template") {
			t, ok := v.(map[string]any)
			if !ok {
				return Resource{}, bad("template", "want a table, got %s", tomlType(v))
			}
			tbl = t
		}
	}
	if tbl == nil {
		return Resource{}, bad("[template]", "missing (a template resource is a [template] table with src, dest and keys)")
	}
	keys := make([]string, 0, len(tbl))
	for k := range tbl {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var src string
	for _, k := range keys {
		v := tbl[k]
		str := func(dst *string) error {
			s, ok := v.(string)
			if !ok {
				return bad(k, "want a string, got %s", tomlType(v))
			}
			*dst = s
			return nil
		}
		integer := func(dst *int) error {
			n, ok := v.(int64)
			if !ok {
				return bad(k, "want an integer, got %s", tomlType(v))
			}
			if n < 0 || n > 1<<31-1 {
				return bad(k, "%d is out of range", n)
			}
			*dst = int(n)
			return nil
		}
		var err error
		switch strings.ToLower(k) {
		case "src":
			err = str(&src)
		case "dest":
			err = str(&r.Dest)
		case "prefix":
			err = str(&r.Prefix)
		case "owner":
			err = str(&r.Owner)
		case "mode":
			err = str(&r.Mode)
		case "check_cmd":
			err = str(&r.CheckCmd)
		case "reload_cmd":
			err = str(&r.ReloadCmd)
		case "uid":
			err = integer(&r.UID)
		case "gid":
			err = integer(&r.GID)
		case "keys":
			arr, ok := v.([]any)
			if !ok {
				return Resource{}, bad(k, "want an array of strings, got %s", tomlType(v))
			}
			for i, e := range arr {
				s, ok := e.(string)
				if !ok {
					return Resource{}, bad(k, "element %d: want a string, got %s", i+1, tomlType(e))
				}
				r.Keys = append(r.Keys, s)
			}
		default:
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s: unknown key %q in [template] ignored", file, k))
		}
		if err != nil {
			return Resource{}, err
		}
	}
	switch {
	case src == "":
		return Resource{}, bad("src", "missing (the template file, relative to %s)", tmplDir)
	case r.Dest == "":
		return Resource{}, bad("dest", "missing (the file to write)")
	case strings.HasSuffix(r.Dest, "/"):
		return Resource{}, bad("dest", "%q is a directory, want a file", r.Dest)
	}
	r.Src = filepath.Join(tmplDir, src)
	if st, err := os.Stat(r.Src); err != nil || st.IsDir() {
		if err == nil {
			err = errors.New("is a directory")
		}
		return Resource{}, bad("src", "template %s: %v", r.Src, unwrapPathError(err))
	}
	if len(r.Keys) == 0 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("%s: keys is empty: the template sees no keys", file))
	}
	for i, k := range r.Keys {
		if strings.ContainsAny(k, "\x00\n\r") {
			return Resource{}, bad("keys", "element %d %q has a control character", i+1, k)
		}
	}
	if r.Mode != "" {
		m, err := strconv.ParseUint(r.Mode, 0, 32)
		if err != nil {
			return Resource{}, bad("mode", "%q is not a number (write it like \"0644\")", r.Mode)
		}
		if !strings.HasPrefix(r.Mode, "0") && m > 7 {
			r.Warnings = append(r.Warnings, fmt.Sprintf("%s: mode %q is read as the decimal number %d, i.e. file mode %#o, as confd reads it; write %q for octal",
				file, r.Mode, m, os.FileMode(m).Perm()|specialBits(os.FileMode(m)), "0"+r.Mode))
		}
	}
	if r.Owner != "" {
		if _, _, err := lookupOwner(r.Owner); err != nil {
			return Resource{}, bad("owner", "%v", err)
		}
	}
	for _, c := range []struct{ field, cmd string }{{"check_cmd", r.CheckCmd}, {"reload_cmd", r.ReloadCmd}} {
		if _, err := expandCmd(c.cmd, "/stage", "/dest"); err != nil {
			return Resource{}, bad(c.field, "%v", err)
		}
	}
	if w := checkCmdWarning(r); w != "" {
		r.Warnings = append(r.Warnings, file+": "+w)
	}
	return r, nil
}

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func specialBits(m os.FileMode) os.FileMode {
	return m & (os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
}

// checkCmdWarning says when check_cmd does not check the new file.
func checkCmdWarning(r Resource) string {
	if r.CheckCmd == "" {
		return ""
	}
	const marker = "\x00haconfd-src\x00"
	expanded, err := expandCmd(r.CheckCmd, marker, r.Dest)
	if err != nil || strings.Contains(expanded, marker) {
		return ""
	}
	if strings.Contains(r.CheckCmd, r.Dest) {
		return fmt.Sprintf("check_cmd checks the old file: it names the destination %s instead of {{.src}}, "+
			"so the new content is installed unchecked; use {{.src}}", r.Dest)
	}
	return "check_cmd does not use {{.src}}, so it does not check the new content before it is installed"
}

// expandCmd executes a check_cmd or reload_cmd as a text/template with
// only .src and .dest, as confd does for check_cmd. No etcd data ever
// reaches a command line.
func expandCmd(cmd, src, dest string) (string, error) {
	if !strings.Contains(cmd, "{{") {
		return cmd, nil
	}
	t, err := template.New("cmd").Option("missingkey=error").Parse(cmd)
	if err != nil {
		return "", oneLineErr(err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, map[string]string{"src": src, "dest": dest}); err != nil {
		return "", oneLineErr(err)
	}
	return b.String(), nil
}

func oneLineErr(err error) error { return errors.New(oneLine(err.Error())) }

// lookupOwner resolves "user", "uid", "user:group" or "uid:gid"; gid is
// -1 when no group is given.
func lookupOwner(owner string) (uid, gid int, err error) {
	name, group, hasGroup := strings.Cut(owner, ":")
	uid, err = lookupID(name, func(n string) (string, error) {
		u, err := user.Lookup(n)
		if err != nil {
			return "", err
		}
		return u.Uid, nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("user %q: %w", name, err)
	}
	gid = -1
	if hasGroup {
		gid, err = lookupID(group, func(n string) (string, error) {
			g, err := user.LookupGroup(n)
			if err != nil {
				return "", err
			}
			return g.Gid, nil
		})
		if err != nil {
			return 0, 0, fmt.Errorf("group %q: %w", group, err)
		}
	}
	return uid, gid, nil
}

func lookupID(s string, byName func(string) (string, error)) (int, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n < 0 {
			return 0, errors.New("negative id")
		}
		return n, nil
	}
	id, err := byName(s)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(id)
}
