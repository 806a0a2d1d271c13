package bench

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseStraceSummary(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		total   int64
		first   SyscallCount
		n       int
		wantErr bool
	}{
		{
			name: "calls and errors",
			in: `syscall              calls    errors
---------------- --------- ---------
close                  400          
accept4                410        10
epoll_wait              12          
---------------- --------- ---------
total                  822        10
`,
			total: 822, first: SyscallCount{Name: "accept4", Calls: 410, Errors: 10}, n: 3,
		},
		{
			name:  "ties sorted by name",
			in:    "syscall calls errors\nwrite 5\nread 5\ntotal 10\n",
			total: 10, first: SyscallCount{Name: "read", Calls: 5}, n: 2,
		},
		{name: "strace wrote no summary", in: "strace: attach: ptrace(PTRACE_SEIZE, 1): Operation not permitted\n", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls, total, err := parseStraceSummary([]byte(tc.in))
			if tc.wantErr {
				if err == nil {
					t.Fatalf("parsed %+v, %d; want an error", calls, total)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if total != tc.total || len(calls) != tc.n || calls[0] != tc.first {
				t.Errorf("got %+v total %d; want %d calls, first %+v, total %d", calls, total, tc.n, tc.first, tc.total)
			}
		})
	}
}

// A quick passthrough-connect run with Syscalls counts, for every system,
// one accept and two closes per connection or so, and the report shows the
// table. The harness itself checks that strace let go of each system and
// that it still answered; a system it could not trace has no counts.
func TestQuickSyscallsPerConnection(t *testing.T) {
	for _, bin := range []string{"nginx", "haproxy", "go", "strace"} {
		need(t, bin)
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("strace -p needs root, which CI has")
		}
		t.Skip("strace -p needs root (ptrace of processes strace did not start)")
	}
	var progress bytes.Buffer
	rep, err := Run(context.Background(), Options{
		Out: t.TempDir(), Quick: true, Syscalls: true,
		Scenarios: []string{"passthrough-connect"}, Systems: []string{sysEdgegate, sysNginx, sysHAProxy},
		Duration: 300 * time.Millisecond, Warmup: 100 * time.Millisecond, Reps: 1, Concurrency: 4,
		NoPin: true, Progress: &progress,
	}, "go test")
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, progress.String())
	}
	seen := map[string]bool{}
	for _, row := range rep.Rows {
		s := row.Syscalls
		if s == nil {
			t.Errorf("%s %s: no system calls counted: %s %s", row.Variant, row.System, row.Status, row.Note)
			continue
		}
		seen[row.System] = true
		if a := s.perConn("accept4") + s.perConn("accept"); a <= 0 {
			t.Errorf("%s %s: %.2f accepts per connection", row.Variant, row.System, a)
		}
		if c := s.perConn("close"); c <= 0 {
			t.Errorf("%s %s: %.2f closes per connection", row.Variant, row.System, c)
		}
		if s.Connections <= 0 || s.TotalPerConn <= 0 {
			t.Errorf("%s %s: %d connections, %.1f calls each", row.Variant, row.System, s.Connections, s.TotalPerConn)
		}
	}
	for _, sys := range []string{sysEdgegate, sysNginx, sysHAProxy} {
		if !seen[sys] {
			t.Errorf("no system calls for %s", sys)
		}
	}
	md := rep.Markdown()
	for _, want := range []string{"| system call | edgegate | nginx | haproxy |", "| **total** |", "| scheduler wake-ups |", "| close |", "not performance figures"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("progress:\n%s\nreport:\n%s", progress.String(), md)
	}
}
