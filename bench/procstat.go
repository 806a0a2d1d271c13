package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of the CPU times in /proc/PID/stat. Linux
// fixes it at 100 on every architecture the harness runs on, and reading it
// from sysconf would need cgo.
const clockTicks = 100

// procTree returns root and every live descendant of root, found by walking
// the parent links in /proc. nginx runs a master and a worker, and a system
// under test may fork helpers: its cost is the cost of all of them.
func procTree(root int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return []int{root}
	}
	children := map[int][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		children[st.ppid] = append(children[st.ppid], pid)
	}
	tree := []int{root}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, children[tree[i]]...)
	}
	return tree
}

// procStat holds the fields of /proc/PID/stat the harness uses.
type procStat struct {
	ppid           int
	utime, stime   uint64
	cutime, cstime uint64
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name is in parentheses and may itself contain spaces or
	// parentheses; every field after the last ')' is a plain number.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is the state (field 3); field N of proc(5) is f[N-3].
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	num := func(field int) uint64 {
		v, _ := strconv.ParseUint(f[field-3], 10, 64)
		return v
	}
	return procStat{
		ppid:   int(num(4)),
		utime:  num(14),
		stime:  num(15),
		cutime: num(16),
		cstime: num(17),
	}, nil
}

// cpuTicks returns the CPU time (user + system, in clock ticks) used so far
// by root and its live descendants, plus what root's reaped children used.
func cpuTicks(root int) uint64 {
	var total uint64
	for _, pid := range procTree(root) {
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		total += st.utime + st.stime
		if pid == root {
			total += st.cutime + st.cstime
		}
	}
	return total
}

// memoryKiB returns the proportional set size (Pss) of root's process tree
// in KiB, falling back to the resident set size where smaps_rollup is not
// readable. Pss splits pages shared by nginx's master and worker fairly
// instead of counting them twice.
func memoryKiB(root int) (pss, rss uint64) {
	for _, pid := range procTree(root) {
		p, okP := readKiBField(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:")
		r, _ := readKiBField(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:")
		if !okP {
			p = r
		}
		pss += p
		rss += r
	}
	return pss, rss
}

func readKiBField(path, key string) (uint64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, key) {
			continue
		}
		fields := strings.Fields(line[len(key):])
		if len(fields) == 0 {
			return 0, false
		}
		v, err := strconv.ParseUint(fields[0], 10, 64)
		return v, err == nil
	}
	return 0, false
}

// openFDs counts the file descriptors held by root's process tree.
func openFDs(root int) int {
	n := 0
	for _, pid := range procTree(root) {
		entries, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
		if err == nil {
			n += len(entries)
		}
	}
	return n
}
