package chart

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
)

// valueRefs are the value paths the chart's templates read: ".Values.a.b"
// (also "$.Values.a.b"), and `hasKey .Values.a "b"` / `index .Values.a "b"`
// for keys values.yaml only mentions in a comment (e.g. devices).
var (
	valueRefDot = regexp.MustCompile(`\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)`)
	valueRefKey = regexp.MustCompile(`(?:hasKey|index)\s+\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)*)\s+"([^"]+)"`)
)

func templateValueRefs(ch *chart.Chart) map[string]bool {
	refs := map[string]bool{}
	for _, t := range ch.Templates {
		for _, m := range valueRefDot.FindAllSubmatch(t.Data, -1) {
			refs[strings.TrimPrefix(string(m[1]), ".")] = true
		}
		for _, m := range valueRefKey.FindAllSubmatch(t.Data, -1) {
			p := strings.TrimPrefix(string(m[1]), ".")
			if p != "" {
				p += "."
			}
			refs[p+string(m[2])] = true
		}
	}
	return refs
}

// unusedValues returns the key paths of vals that the chart does not use,
// with the reason: a key is used if the chart's values.yaml has it or a
// template reads it. Under a map the chart treats as free-form (an empty
// map by default, e.g. extraConfig or podAnnotations, or one the
// templates read only as a whole, e.g. nodeSelector) any key is fine.
func unusedValues(ch *chart.Chart, vals map[string]any) []string {
	refs := templateValueRefs(ch)
	deeper := func(p string) bool {
		for r := range refs {
			if strings.HasPrefix(r, p+".") {
				return true
			}
		}
		return false
	}
	var out []string
	var walk func(path string, ours map[string]any, defaults map[string]any, haveDefaults bool)
	walk = func(path string, ours map[string]any, defaults map[string]any, haveDefaults bool) {
		for k, v := range ours {
			p := k
			if path != "" {
				p = path + "." + k
			}
			d, inDefaults := defaults[k]
			if !haveDefaults || !inDefaults {
				switch {
				case refs[p] && !deeper(p):
				case deeper(p):
					if vm, ok := v.(map[string]any); ok {
						walk(p, vm, nil, false)
					} else {
						out = append(out, fmt.Sprintf("%s: the chart reads keys under it, not a %T", p, v))
					}
				default:
					out = append(out, p+": not a value of the chart (neither in its values.yaml nor read by a template)")
				}
				continue
			}
			dm, dIsMap := d.(map[string]any)
			vm, vIsMap := v.(map[string]any)
			switch {
			case dIsMap && vIsMap:
				if len(dm) == 0 || (refs[p] && !deeper(p)) {
					continue // free-form
				}
				walk(p, vm, dm, true)
			case dIsMap && v != nil:
				out = append(out, fmt.Sprintf("%s: the chart's value is a map, ours a %T", p, v))
			case vIsMap && d != nil:
				out = append(out, fmt.Sprintf("%s: the chart's value is a %T, ours a map", p, d))
			}
		}
	}
	walk("", vals, ch.Values, true)
	sort.Strings(out)
	return out
}
