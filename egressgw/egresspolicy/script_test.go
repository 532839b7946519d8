package egresspolicy

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/egressha/egressha/egressgw/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the expected sections of testdata/*.txtar")

// TestScripts runs testdata/*.txtar. Each archive holds:
//
//	policies.yaml  EgressGatewayPolicy objects (CRD YAML, "---" separated)
//	gateways.yaml  EgressGateway objects with status (optional)
//	endpoints.yaml a list of {ip, namespace, node, labels} (optional)
//	entries        expected table, as `cilium-dbg bpf egress list` prints it
//	conditions     expected "<policy> <Type>=<Status> <Reason>: <Message>"
//	errors         expected conversion errors, one per object (optional;
//	               absent means none)
//
// The comment at the top says what the case shows. Besides comparing the
// sections, every case is checked with checkInvariants (Compute = union of
// ForEndpoint, order independence, LPM lookup = the policies' intent).
// go test -run TestScripts -update rewrites the expected sections.
func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txtar")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			runScript(t, file)
		})
	}
}

type scriptEndpoint struct {
	IP        string            `json:"ip"`
	Namespace string            `json:"namespace"`
	Node      string            `json:"node"`
	Labels    map[string]string `json:"labels"`
}

func runScript(t *testing.T, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	ar := parseArchive(data)
	section := func(name string) (string, bool) {
		for _, f := range ar.Files {
			if f.Name == name {
				return string(f.Data), true
			}
		}
		return "", false
	}

	var errs []string
	var policies []Policy
	src, _ := section("policies.yaml")
	for _, doc := range yamlDocs(src) {
		var obj v1alpha1.EgressGatewayPolicy
		if err := yaml.UnmarshalStrict([]byte(doc), &obj); err != nil {
			t.Fatalf("policies.yaml: %v", err)
		}
		p, err := PolicyFromObject(&obj)
		if err != nil {
			errs = append(errs, fmt.Sprintf("policy %s: %s", obj.Name, strings.ReplaceAll(err.Error(), "\n", "; ")))
		}
		policies = append(policies, p)
	}
	gateways := map[string]Gateway{}
	src, _ = section("gateways.yaml")
	for _, doc := range yamlDocs(src) {
		var obj v1alpha1.EgressGateway
		if err := yaml.UnmarshalStrict([]byte(doc), &obj); err != nil {
			t.Fatalf("gateways.yaml: %v", err)
		}
		g, err := GatewayFromObject(&obj)
		if err != nil {
			errs = append(errs, fmt.Sprintf("gateway %s: %s", obj.Name, strings.ReplaceAll(err.Error(), "\n", "; ")))
		}
		gateways[g.Name] = g
	}
	var endpoints []Endpoint
	src, _ = section("endpoints.yaml")
	var eps []scriptEndpoint
	if err := yaml.UnmarshalStrict([]byte(src), &eps); err != nil {
		t.Fatalf("endpoints.yaml: %v", err)
	}
	for _, e := range eps {
		endpoints = append(endpoints, Endpoint{IP: netip.MustParseAddr(e.IP), Namespace: e.Namespace, Node: e.Node, Labels: e.Labels})
	}

	entries, conds := Compute(policies, gateways, endpoints)
	got := map[string]string{
		"entries":    FormatTable(entries),
		"conditions": formatConditions(conds),
		"errors":     strings.Join(errs, "\n"),
	}
	if got["errors"] != "" {
		got["errors"] += "\n"
	}

	if *update {
		for _, name := range []string{"entries", "conditions", "errors"} {
			i := slices.IndexFunc(ar.Files, func(f archiveFile) bool { return f.Name == name })
			switch {
			case i >= 0:
				ar.Files[i].Data = []byte(got[name])
			case got[name] != "":
				ar.Files = append(ar.Files, archiveFile{Name: name, Data: []byte(got[name])})
			}
		}
		if err := os.WriteFile(file, ar.format(), 0o644); err != nil {
			t.Fatal(err)
		}
	} else {
		for _, name := range []string{"entries", "conditions", "errors"} {
			want, ok := section(name)
			if !ok && name != "errors" {
				t.Errorf("section %s missing", name)
				continue
			}
			if got[name] != want {
				t.Errorf("%s differ:\n--- got\n%s--- want\n%s", name, got[name], want)
			}
		}
	}
	checkInvariants(t, policies, gateways, endpoints)
}

// archive is the txtar format (golang.org/x/tools/txtar), parsed here so
// that the module does not need x/tools as a direct dependency: a comment,
// then files, each introduced by a "-- name --" line.
type archive struct {
	Comment []byte
	Files   []archiveFile
}

type archiveFile struct {
	Name string
	Data []byte
}

var fileMarker = regexp.MustCompile(`^-- (.+) --$`)

func parseArchive(data []byte) *archive {
	ar := &archive{}
	cur := &ar.Comment
	for _, line := range strings.SplitAfter(string(data), "\n") {
		if m := fileMarker.FindStringSubmatch(strings.TrimRight(line, "\r\n")); m != nil {
			ar.Files = append(ar.Files, archiveFile{Name: strings.TrimSpace(m[1])})
			cur = &ar.Files[len(ar.Files)-1].Data
			continue
		}
		*cur = append(*cur, line...)
	}
	return ar
}

func (ar *archive) format() []byte {
	var b strings.Builder
	b.Write(ar.Comment)
	for _, f := range ar.Files {
		fmt.Fprintf(&b, "-- %s --\n", f.Name)
		b.Write(f.Data)
		if len(f.Data) > 0 && f.Data[len(f.Data)-1] != '\n' {
			b.WriteByte('\n')
		}
	}
	return []byte(b.String())
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

func yamlDocs(s string) []string {
	var out []string
	for _, d := range docSep.Split(s, -1) {
		if strings.TrimSpace(d) != "" {
			out = append(out, d)
		}
	}
	return out
}
