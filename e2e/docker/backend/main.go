// Command backend is the e2e's stand-in for a database node in a container
// (make e2e-docker): on -listen it writes its id and a newline to every
// connection, then echoes what the client sends until the client closes
// (a client that only wants the id closes after the first line; one that
// holds its connection sends lines and reads them back). On -check it
// answers HTTP 200 to anything, as "haconfd check" does for a Synced node,
// so that HAProxy's default httpchk passes. It is built static and runs as
// the only file of its image.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	id := flag.String("id", "", "the id written to every connection (required)")
	listen := flag.String("listen", ":3306", "address of the id/echo service")
	check := flag.String("check", ":9200", `address of the HTTP health check ("" for none)`)
	flag.Parse()
	if *id == "" {
		fmt.Fprintln(os.Stderr, "backend: -id is required")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "backend: -listen %s: %v\n", *listen, err)
		os.Exit(2)
	}
	if *check != "" {
		hl, err := net.Listen("tcp", *check)
		if err != nil {
			fmt.Fprintf(os.Stderr, "backend: -check %s: %v\n", *check, err)
			os.Exit(2)
		}
		srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "%s is synced\n", *id)
		})}
		go func() { _ = srv.Serve(hl) }()
	}
	fmt.Printf("backend %s: serving on %s\n", *id, ln.Addr())
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		os.Exit(0)
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go serve(c, *id)
	}
}

func serve(c net.Conn, id string) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := c.Write([]byte(id + "\n")); err != nil {
		return
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		_ = c.SetDeadline(time.Now().Add(2 * time.Minute))
		if _, err := c.Write(append(sc.Bytes(), '\n')); err != nil {
			return
		}
	}
}
