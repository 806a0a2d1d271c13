package main

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/edgegate/edgegate/gateway/cloudflare"
)

// defaultCloudflareDir is where `edgegate cloudflare update` installs a set
// and where the gateway looks for one (cloudflare_data's default).
const defaultCloudflareDir = "/var/lib/edgegate/cloudflare"

func cloudflareUsage(w io.Writer) { fmt.Fprintln(w, help["cloudflare update"]) }

// cmdCloudflare runs `edgegate cloudflare ...`.
func cmdCloudflare(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		cloudflareUsage(stderr)
		return 2
	}
	switch args[0] {
	case "update":
		return cmdCloudflareUpdate(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		if len(args) > 1 && args[1] == "update" {
			return cmdCloudflareUpdate([]string{"--help"}, stdout, stderr)
		}
		fmt.Fprintln(stdout, help["cloudflare"])
		return 0
	}
	fmt.Fprintf(stderr, "edgegate cloudflare: unknown command %q\n", args[0])
	cloudflareUsage(stderr)
	return 2
}

func cmdCloudflareUpdate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("cloudflare update", stderr)
	v4File := fs.String("ips-v4", "", "Cloudflare's IPv4 list (https://www.cloudflare.com/ips-v4)")
	v6File := fs.String("ips-v6", "", "Cloudflare's IPv6 list (https://www.cloudflare.com/ips-v6)")
	caFile := fs.String("ca", "", "Cloudflare's origin-pull CA in PEM (authenticated_origin_pull_ca.pem)")
	dir := fs.String("dir", defaultCloudflareDir, "folder to install the set in (the config's cloudflare_data)")
	reload := fs.String("reload", "", "after installing a set that changed, have the gateway running this configuration reload it")
	if code, ok := parseFlags(fs, args, stdout); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edgegate cloudflare update: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	for _, f := range []struct{ flag, value string }{{"--ips-v4", *v4File}, {"--ips-v6", *v6File}, {"--ca", *caFile}} {
		if f.value == "" {
			fmt.Fprintf(stderr, "edgegate cloudflare update: %s FILE is required\n", f.flag)
			cloudflareUsage(stderr)
			return 2
		}
	}
	refuse := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "edgegate cloudflare update: refused: %s\n", fmt.Sprintf(format, a...))
		fmt.Fprintf(stderr, "edgegate cloudflare update: nothing was written; the set in %s is unchanged\n", *dir)
		return 1
	}

	var contents [3][]byte
	for i, name := range []string{*v4File, *v6File, *caFile} {
		b, err := os.ReadFile(name)
		if err != nil {
			return refuse("%v", err)
		}
		contents[i] = b
	}
	next, err := cloudflare.Parse(contents[0], contents[1], contents[2], time.Now())
	if err != nil {
		return refuse("%v", err)
	}

	// A list that shrinks by half or more is far more likely a partial
	// download than Cloudflare giving up half its network.
	current, err := cloudflare.Read(*dir, time.Now())
	installedOK := err == nil && current.Source != "built-in"
	if err != nil {
		fmt.Fprintf(stderr, "edgegate cloudflare update: the installed set is not valid (%v); comparing with the built-in set and replacing it\n", err)
		current = cloudflare.Builtin()
	}
	if installedOK && sameSet(current, next) {
		fmt.Fprintf(stdout, "unchanged: the set in %s already holds these %d IPv4 and %d IPv6 ranges and this CA; nothing written, nothing reloaded\n",
			*dir, len(next.IPv4), len(next.IPv6))
		return 0
	}
	for _, l := range []struct {
		name      string
		got, have int
	}{{"IPv4", len(next.IPv4), len(current.IPv4)}, {"IPv6", len(next.IPv6), len(current.IPv6)}} {
		if 2*l.got < l.have {
			return refuse("the %s list has %d entries, fewer than half of the %d in the %s set (truncated download?)",
				l.name, l.got, l.have, describeSource(current))
		}
	}

	for _, w := range next.Warnings {
		fmt.Fprintf(stderr, "\n*** WARNING *** %s\n\n", w)
	}
	if err := cloudflare.Install(*dir, next); err != nil {
		fmt.Fprintf(stderr, "edgegate cloudflare update: %v\n", err)
		return 1
	}
	// Read back what the gateway will read, so a success here means the
	// gateway will accept the folder too.
	installed, err := cloudflare.Read(*dir, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "edgegate cloudflare update: the installed set does not read back: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "installed in %s: %d IPv4 and %d IPv6 ranges (was %d and %d, %s), CA %q valid until %s\n",
		*dir, len(installed.IPv4), len(installed.IPv6), len(current.IPv4), len(current.IPv6), describeSource(current),
		installed.CA.Subject.String(), installed.CA.NotAfter.UTC().Format(time.DateOnly))
	if *reload == "" {
		fmt.Fprintln(stdout, "a running gateway uses it after its next reload (edgegate reload)")
		return 0
	}
	return cmdSignal("reload", []string{"--config", *reload}, stdout, stderr)
}

// sameSet reports whether a and b hold the same ranges, in any order, and
// the same CA.
func sameSet(a, b *cloudflare.Data) bool {
	sorted := func(ps []netip.Prefix) []netip.Prefix {
		ps = slices.Clone(ps)
		slices.SortFunc(ps, func(x, y netip.Prefix) int {
			if c := x.Addr().Compare(y.Addr()); c != 0 {
				return c
			}
			return x.Bits() - y.Bits()
		})
		return ps
	}
	return a.CA.Equal(b.CA) && slices.Equal(sorted(a.IPv4), sorted(b.IPv4)) && slices.Equal(sorted(a.IPv6), sorted(b.IPv6))
}

func describeSource(d *cloudflare.Data) string {
	if d.Source == "built-in" {
		return "built-in"
	}
	return "installed"
}
