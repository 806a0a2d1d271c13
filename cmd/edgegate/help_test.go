package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// commands lists the commands `edgegate help` names, "cloudflare update"
// as one.
func commands(t *testing.T) []string {
	t.Helper()
	stdout, stderr, code := runEdgegate(t, "help")
	if code != 0 {
		t.Fatalf("edgegate help: exit %d, stderr %q", code, stderr)
	}
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^  edgegate ([a-z]+(?: [a-z]+)?)`).FindAllStringSubmatch(stdout, -1) {
		name := strings.TrimSuffix(m[1], " ")
		if f := strings.Fields(name); len(f) == 2 && f[0] != "cloudflare" {
			name = f[0] // "help COMMAND" and the like: the second word is an argument
		}
		out = append(out, name)
	}
	if len(out) < 8 {
		t.Fatalf("edgegate help lists %q; want every command", out)
	}
	return out
}

// TestHelpEveryCommand: `edgegate help COMMAND` and `edgegate COMMAND
// --help` (and -h) exit 0 and print the command's usage on stdout, with its
// flags, for every command the overview lists; nothing goes to stderr and
// nothing runs (a run would not exit).
func TestHelpEveryCommand(t *testing.T) {
	t.Parallel()
	for _, name := range commands(t) {
		words := strings.Fields(name)
		for _, args := range [][]string{
			append([]string{"help"}, words...),
			append(append([]string{}, words...), "--help"),
			append(append([]string{}, words...), "-h"),
		} {
			stdout, stderr, code := runEdgegate(t, args...)
			if code != 0 || stderr != "" {
				t.Errorf("edgegate %s: exit %d, stderr %q; want 0 and nothing", strings.Join(args, " "), code, stderr)
			}
			if !strings.HasPrefix(stdout, "usage: edgegate "+name) {
				t.Errorf("edgegate %s: stdout %q; want the usage of %s first", strings.Join(args, " "), stdout, name)
			}
		}
	}
	// Flags are listed with their help, from the commands' own flag sets.
	for cmd, flags := range map[string][]string{
		"run":               {"-config"},
		"check":             {"-config"},
		"reload":            {"-config"},
		"upgrade":           {"-config"},
		"demo":              {"-listen", "-check"},
		"cloudflare update": {"-ips-v4", "-ips-v6", "-ca", "-dir", "-reload"},
	} {
		stdout, _, _ := runEdgegate(t, append(strings.Fields(cmd), "--help")...)
		for _, f := range flags {
			if !strings.Contains(stdout, "\n  "+f+" ") && !strings.Contains(stdout, "\n  "+f+"\n") {
				t.Errorf("edgegate %s --help does not list %s:\n%s", cmd, f, stdout)
			}
		}
	}
	// A bad flag is still an error: the complaint and the usage line on
	// stderr, status 2.
	stdout, stderr, code := runEdgegate(t, "check", "--bogus")
	if code != 2 || stdout != "" || !strings.Contains(stderr, "usage: edgegate check") {
		t.Errorf("check --bogus: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if _, _, code := runEdgegate(t, "help", "launch"); code != 2 {
		t.Errorf("help of an unknown command: exit %d, want 2", code)
	}
}

// TestBashCompletion: the completion script is valid bash, and sourced in
// bash it completes every command `edgegate help` lists, cloudflare's
// subcommand, each command's flags, and file names after --config.
func TestBashCompletion(t *testing.T) {
	t.Parallel()
	bash := requireTool(t, "bash")
	script, err := filepath.Abs("../../deploy/completion/edgegate.bash")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := runBash(t, bash, "", "-n", script); err != nil {
		t.Fatalf("bash -n %s: %v\n%s", script, err, out)
	}
	dir := t.TempDir()
	writeFile(t, dir, "edgegate.yaml", "")
	writeFile(t, dir, "edgegate.yml.bak", "")
	complete := func(line string) []string {
		t.Helper()
		words := strings.Fields(line)
		if strings.HasSuffix(line, " ") {
			words = append(words, "")
		}
		var quoted []string
		for _, w := range words {
			quoted = append(quoted, "'"+w+"'")
		}
		prog := `source "$1"
complete -p edgegate >/dev/null || { echo "no completion registered for edgegate" >&2; exit 1; }
COMP_WORDS=(` + strings.Join(quoted, " ") + `)
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE='` + line + `'
COMP_POINT=${#COMP_LINE}
_edgegate edgegate "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
`
		out, err := runBash(t, bash, dir, "-c", prog, "complete", script)
		if err != nil {
			t.Fatalf("completing %q: %v\n%s", line, err, out)
		}
		return strings.Fields(out)
	}
	has := func(got []string, want ...string) bool {
		for _, w := range want {
			found := false
			for _, g := range got {
				found = found || g == w
			}
			if !found {
				return false
			}
		}
		return true
	}
	var top []string
	for _, c := range commands(t) {
		top = append(top, strings.Fields(c)[0])
	}
	if got := complete("edgegate "); !has(got, top...) {
		t.Errorf("edgegate <TAB>: %q; want every command %q", got, top)
	}
	if got := complete("edgegate re"); !has(got, "reload") || has(got, "run") {
		t.Errorf("edgegate re<TAB>: %q; want reload and not run", got)
	}
	if got := complete("edgegate cloudflare "); !has(got, "update") {
		t.Errorf("edgegate cloudflare <TAB>: %q; want update", got)
	}
	if got := complete("edgegate cloudflare update --"); !has(got, "--ips-v4", "--ips-v6", "--ca", "--dir", "--reload", "--help") {
		t.Errorf("edgegate cloudflare update --<TAB>: %q", got)
	}
	if got := complete("edgegate check --"); !has(got, "--config", "--help") {
		t.Errorf("edgegate check --<TAB>: %q", got)
	}
	if got := complete("edgegate demo --"); !has(got, "--listen", "--check") {
		t.Errorf("edgegate demo --<TAB>: %q", got)
	}
	if got := complete("edgegate help "); !has(got, top...) {
		t.Errorf("edgegate help <TAB>: %q; want every command", got)
	}
	if got := complete("edgegate run --config edgegate.y"); !has(got, "edgegate.yaml", "edgegate.yml.bak") {
		t.Errorf("edgegate run --config edgegate.y<TAB>: %q; want the files", got)
	}
}

// runBash runs bash with args in dir and returns its combined output.
func runBash(t *testing.T, bash, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bash, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return string(out), err
}
