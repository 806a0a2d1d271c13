package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// help is each command's text for `edgegate help COMMAND` and
// `edgegate COMMAND --help`: its usage line first, then what it does. The
// flags, from the command's own flag set, follow it.
var help = map[string]string{
	"run": `usage: edgegate run [--config FILE]

Runs the gateway on the configuration in FILE until it is stopped. The log
goes to stderr, and to log.file as well when that is set. Signals:
  SIGHUP           reload the configuration (edgegate reload does it with an answer)
  SIGUSR1          open log.file again (after logrotate renamed it)
  SIGUSR2          upgrade: hand the listening sockets to the installed binary
  SIGTERM, SIGINT  stop accepting, drain for timeouts.drain, exit
A configuration that does not load, or an address that cannot be bound, is
reported as FILE:LINE: what is wrong, with exit status 1.`,

	"check": `usage: edgegate check [--config FILE]

Validates the configuration in FILE, loading every certificate, key and CA it
names, and tries what run needs from this host (addresses free, interfaces
present). Prints the route table, notes and warnings, each with FILE:LINE.
Exit status 0 when it would run, 1 with FILE:LINE: what is wrong when not.`,

	"reload": `usage: edgegate reload [--config FILE]

Has the running gateway reload FILE. Through control_socket the process
judges the file and its answer is the exit status (FILE:LINE on a refusal);
without one, FILE is validated here and SIGHUP is sent to pid_file.`,

	"upgrade": `usage: edgegate upgrade [--config FILE]

Validates FILE, then has the running gateway start the installed binary,
hand it the listening sockets and drain (SIGUSR2 does the same).`,

	"cloudflare": `usage: edgegate cloudflare update --ips-v4 FILE --ips-v6 FILE --ca FILE [--dir DIR] [--reload CONFIG]

Manages the copy of Cloudflare's IP ranges and origin-pull CA that replaces
the built-in one. The only command is update; see edgegate help cloudflare update.`,

	"cloudflare update": `usage: edgegate cloudflare update --ips-v4 FILE --ips-v6 FILE --ca FILE [--dir DIR] [--reload CONFIG]

Validates Cloudflare's IP lists and origin-pull CA as fetched by the operator
and installs them in DIR (default ` + defaultCloudflareDir + `), where they
replace the built-in copies at the gateway's next start or reload. A set that
is empty, malformed, suspiciously short, or whose CA is not a valid CA
certificate is refused (exit status 1) and the installed set is kept. A set
equal to the installed one is not written again: it prints "unchanged" and
exits 0. With --reload CONFIG, a set that changed is followed by
edgegate reload --config CONFIG (its exit status is this command's), and an
unchanged one by nothing, so a daily timer reloads only when Cloudflare
changed something.`,

	"demo": `usage: edgegate demo [--listen ADDR] [--check]

Makes a throwaway PKI in a temporary folder, starts two demo upstreams and
the gateway on ADDR, and prints curl commands for the passthrough path and
the mtls path with and without a client certificate. With --check it makes
the same requests with Go's client and exits.`,

	"version": `usage: edgegate version

Prints the version, the Go release it was built with, and the platform.`,

	"help": `usage: edgegate help [COMMAND]

Prints the list of commands, or COMMAND's usage (as edgegate COMMAND --help).`,
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool { return arg == "-h" || arg == "-help" || arg == "--help" }

// newFlagSet returns a flag set for the command name whose errors go to
// stderr; parse it with parseFlags.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses a command's arguments into fs. It reports ok=false
// when the command must not go on: after -h or --help, with the command's
// help printed to stdout and status 0; after a bad flag (which the flag
// package named on stderr), with the usage line on stderr and status 2.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (code int, ok bool) {
	err := fs.Parse(args)
	switch {
	case err == nil:
		return 0, true
	case errors.Is(err, flag.ErrHelp):
		printHelp(fs, stdout)
		return 0, false
	}
	first, _, _ := strings.Cut(help[fs.Name()], "\n")
	fmt.Fprintf(fs.Output(), "%s\nrun 'edgegate help %s' for more\n", first, fs.Name())
	return 2, false
}

// printHelp writes the command's help and its flags.
func printHelp(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintln(w, help[fs.Name()])
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprintln(w, "\nflags:")
	out := fs.Output()
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(out)
}

// cmdHelp runs `edgegate help [COMMAND...]`.
func cmdHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || isHelp(args[0]) || args[0] == "help" {
		if len(args) > 0 {
			fmt.Fprintln(stdout, help["help"])
			return 0
		}
		usage(stdout)
		return 0
	}
	return run(append(args[:len(args):len(args)], "--help"), stdout, stderr)
}
