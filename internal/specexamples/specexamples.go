// Package specexamples extracts the YAML examples from the user
// documentation in shared/spec, so tests can prove that every example
// applies unchanged to our API types and CRDs.
//
// The documents come in three shapes: Markdown with ```yaml fences, plain
// text with the YAML indented as-is, and one web rendering whose
// indentation was stripped ("flattened"). A flattened example is rebuilt
// by taking the indentation of the clean example it matches line for line.
package specexamples

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// Group is the API group whose examples we extract.
const Group = "network.deckhouse.io"

// Example is one YAML object found in a spec document.
type Example struct {
	File string // base name of the document
	Line int    // 1-based line of the apiVersion line
	Kind string
	// YAML is the example as written, or, for a flattened one, rebuilt
	// with the indentation of the matching clean example.
	YAML string
	// Flattened is true when the document lost the indentation.
	Flattened bool
}

func (e Example) String() string { return fmt.Sprintf("%s:%d (%s)", e.File, e.Line, e.Kind) }

// Dir finds shared/spec: $EGRESSHA_SPEC_DIR, else ../shared/spec next to
// the repository root (the directory holding this module's go.mod).
func Dir() (string, error) {
	if d := os.Getenv("EGRESSHA_SPEC_DIR"); d != "" {
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
			strings.HasPrefix(string(data), "module github.com/egressha/egressha\n") {
			spec := filepath.Join(d, "..", "shared", "spec")
			if _, err := os.Stat(spec); err != nil {
				return "", fmt.Errorf("spec documents not found at %s (set EGRESSHA_SPEC_DIR): %w", spec, err)
			}
			return spec, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("repository root not found above " + wd)
		}
	}
}

var (
	apiVersionLine = regexp.MustCompile(`^\s*apiVersion:\s*` + regexp.QuoteMeta(Group) + `/`)
	yamlLine       = regexp.MustCompile(`^\s*([\w./-]+:(\s.*)?|- .*|#.*)$`)
	kindLine       = regexp.MustCompile(`^\s*kind:\s*(\S+)`)
)

// MustLoad finds the documents and loads their examples, failing the test
// (never skipping it) when they cannot be read.
func MustLoad(tb testing.TB) (dir string, examples []Example) {
	tb.Helper()
	dir, err := Dir()
	if err != nil {
		tb.Fatal(err)
	}
	examples, err = Load(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return dir, examples
}

// Load returns the examples of every document in dir, and checks that each
// occurrence of the group's apiVersion in a document was extracted.
func Load(dir string) ([]Example, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var all []Example
	for _, name := range names {
		lines, err := readLines(name)
		if err != nil {
			return nil, err
		}
		found := extract(filepath.Base(name), lines)
		want := 0
		for _, l := range lines {
			if apiVersionLine.MatchString(l) {
				want++
			}
		}
		if len(found) != want {
			return nil, fmt.Errorf("%s: %d %s objects mentioned, %d extracted", name, want, Group, len(found))
		}
		all = append(all, found...)
	}
	return all, rebuildFlattened(all)
}

func readLines(name string) ([]string, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}

// extract takes each block that starts at an apiVersion line of our group
// and runs while lines look like YAML: up to a closing fence, a blank line
// or prose.
func extract(file string, lines []string) []Example {
	var out []Example
	for i := 0; i < len(lines); i++ {
		if !apiVersionLine.MatchString(lines[i]) {
			continue
		}
		start := i
		var block []string
		for ; i < len(lines); i++ {
			l := lines[i]
			if strings.HasPrefix(strings.TrimSpace(l), "```") || strings.TrimSpace(l) == "" || !yamlLine.MatchString(l) {
				break
			}
			block = append(block, strings.TrimRight(l, " \t"))
		}
		i-- // the outer loop advances past the line that ended the block
		ex := Example{File: file, Line: start + 1, YAML: strings.Join(block, "\n") + "\n", Flattened: true}
		for _, l := range block {
			if m := kindLine.FindStringSubmatch(l); m != nil && ex.Kind == "" {
				ex.Kind = m[1]
			}
			if strings.HasPrefix(l, " ") {
				ex.Flattened = false
			}
		}
		out = append(out, ex)
	}
	return out
}

// content is the sequence of non-comment lines with indentation removed.
func content(yaml string) []string {
	var out []string
	for _, l := range strings.Split(yaml, "\n") {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		out = append(out, t)
	}
	return out
}

// rebuildFlattened gives each flattened example the indentation of a clean
// example of the same kind whose lines match one for one, except for node
// label keys (documents use different labels). It fails if none matches,
// so a flattened example can never be skipped silently.
func rebuildFlattened(all []Example) error {
	for i := range all {
		if !all[i].Flattened {
			continue
		}
		flat := content(all[i].YAML)
		rebuilt := ""
		for _, ref := range all {
			if ref.Flattened || ref.Kind != all[i].Kind {
				continue
			}
			if y, ok := reindent(flat, ref.YAML); ok {
				rebuilt = y
				break
			}
		}
		if rebuilt == "" {
			return fmt.Errorf("%s: flattened example matches no indented example; add an indented copy to a spec document", all[i])
		}
		all[i].YAML = rebuilt
	}
	return nil
}

func reindent(flat []string, ref string) (string, bool) {
	var refLines []string
	for _, l := range strings.Split(ref, "\n") {
		t := strings.TrimSpace(l)
		if t != "" && !strings.HasPrefix(t, "#") {
			refLines = append(refLines, l)
		}
	}
	if len(refLines) != len(flat) {
		return "", false
	}
	var b strings.Builder
	underSelector := false
	for j, rl := range refLines {
		t := strings.TrimSpace(rl)
		if t != flat[j] && !underSelector {
			return "", false
		}
		indent := rl[:len(rl)-len(strings.TrimLeft(rl, " "))]
		b.WriteString(indent + flat[j] + "\n")
		underSelector = t == "nodeSelector:"
	}
	return b.String(), true
}
