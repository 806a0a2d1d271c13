// Command edgegate is an edge gateway for TLS origins: it routes each
// connection by the SNI of its ClientHello, and per virtual host either
// passes the TLS stream through to an upstream or terminates it, requiring a
// client certificate (Cloudflare Authenticated Origin Pulls), and forwards
// the cleartext after a PROXY protocol header.
//
//	edgegate run --config FILE     run the gateway
//	edgegate check --config FILE   validate a configuration and print its routes
//	edgegate demo                  a self-contained demo on loopback
//	edgegate version
package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/edgegate/edgegate/gateway"
	"github.com/edgegate/edgegate/gateway/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  edgegate run --config FILE     run the gateway (logs to stderr)
  edgegate check --config FILE   validate a configuration, print its routes
  edgegate reload --config FILE  validate, then have the running gateway reload it
  edgegate upgrade --config FILE validate, then have the running gateway hand over to the installed binary
  edgegate cloudflare update --ips-v4 FILE --ips-v6 FILE --ca FILE [--dir DIR]
                                 install Cloudflare's ranges and origin-pull CA (validated)
  edgegate demo                  run a self-contained demo on loopback
  edgegate version               print the version
`)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "reload", "upgrade":
		return cmdSignal(args[0], args[1:], stdout, stderr)
	case "cloudflare":
		return cmdCloudflare(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "edgegate %s (%s, %s/%s)\n", buildVersion(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "edgegate: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

// configFlag parses the --config flag shared by run and check.
func configFlag(name string, args []string, stderr io.Writer) (string, bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/edgegate/edgegate.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return "", false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edgegate %s: unexpected argument %q\n", name, fs.Arg(0))
		return "", false
	}
	return *path, true
}

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	path, ok := configFlag("check", args, stderr)
	if !ok {
		return 2
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// Compiling loads every certificate, key and CA the file names.
	if _, err := gateway.NewServer(cfg, discardLogger()); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// What run needs from this host: its addresses free (or held by the
	// running edgegate) and its interfaces present.
	notes, probeWarnings, err := gateway.Probe(cfg)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", path)
	gateway.WriteRoutes(stdout, cfg)
	for _, n := range notes {
		fmt.Fprintf(stdout, "note: %s\n", n)
	}
	for _, w := range append(probeWarnings, gateway.Warnings(cfg)...) {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	return 0
}

// notifyStop delivers SIGINT and SIGTERM to c.
func notifyStop(c chan os.Signal) { signal.Notify(c, syscall.SIGINT, syscall.SIGTERM) }

// discardLogger is a logger that writes nothing, for compiling a
// configuration only to validate it.
func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
