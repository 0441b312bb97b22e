package haproxy

// Alive reports whether pid is a live process (not a zombie).
func Alive(pid int) bool { return alive(pid) }
