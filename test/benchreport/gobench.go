package main

import (
	"bufio"
	"io"
	"strconv"
	"strings"
)

// goBench is one result line of `go test -bench`:
//
//	BenchmarkX/sub-2   1000   123 ns/op   45 B/op   6 allocs/op   7.8 ratio
type goBench struct {
	Pkg        string
	Name       string // without the -GOMAXPROCS suffix
	Procs      int
	Iterations int64
	Metrics    []metric // in the order printed
	Line       string
}

type metric struct {
	Value float64
	Unit  string
}

// Metric returns the value of unit and whether the line has it.
func (b goBench) Metric(unit string) (float64, bool) {
	for _, m := range b.Metrics {
		if m.Unit == unit {
			return m.Value, true
		}
	}
	return 0, false
}

// goBenchRun is the parsed output: benchmarks by package in order, and
// the header lines (goos, goarch, cpu) go test prints per package.
type goBenchRun struct {
	Packages []string
	ByPkg    map[string][]goBench
	CPU      string
	Failures []string // FAIL lines and panics
}

func parseGoBench(r io.Reader) goBenchRun {
	run := goBenchRun{ByPkg: map[string][]goBench{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	pkg := ""
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), " \t")
		switch {
		case strings.HasPrefix(line, "pkg: "):
			pkg = strings.TrimPrefix(line, "pkg: ")
		case strings.HasPrefix(line, "cpu: "):
			run.CPU = strings.TrimPrefix(line, "cpu: ")
		case strings.HasPrefix(line, "FAIL") || strings.HasPrefix(line, "--- FAIL") || strings.HasPrefix(line, "panic:"):
			run.Failures = append(run.Failures, line)
		case strings.HasPrefix(line, "Benchmark"):
			b, ok := parseBenchLine(line)
			if !ok {
				continue
			}
			b.Pkg = pkg
			if _, seen := run.ByPkg[pkg]; !seen {
				run.Packages = append(run.Packages, pkg)
			}
			run.ByPkg[pkg] = append(run.ByPkg[pkg], b)
		}
	}
	return run
}

func parseBenchLine(line string) (goBench, bool) {
	f := strings.Fields(line)
	// name, iterations, then value/unit pairs.
	if len(f) < 4 || len(f)%2 != 0 {
		return goBench{}, false
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return goBench{}, false
	}
	b := goBench{Name: f[0], Procs: 1, Iterations: n, Line: line}
	if i := strings.LastIndexByte(f[0], '-'); i > 0 {
		if p, err := strconv.Atoi(f[0][i+1:]); err == nil {
			b.Name, b.Procs = f[0][:i], p
		}
	}
	for i := 2; i+1 < len(f); i += 2 {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return goBench{}, false
		}
		b.Metrics = append(b.Metrics, metric{Value: v, Unit: f[i+1]})
	}
	return b, true
}
