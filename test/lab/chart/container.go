package chart

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Environ returns the container's environment ("NAME=value", in the
// chart's order) as a kubelet builds it:
//   - value: $(VAR) references to the variables before it are expanded;
//   - fieldRef: refs[fieldPath], e.g. "spec.nodeName", "metadata.namespace";
//   - resourceFieldRef: refs[resource], e.g. "limits.memory", as given;
//     without one, limits.memory and limits.cpu are the machine's memory
//     and CPUs (divided by the divisor), as a kubelet gives a container
//     without limits its node's allocatable (the chart sets none);
//   - configMapKeyRef: configMaps[name][key]; a missing optional one
//     leaves the variable unset.
//
// A reference it cannot resolve (and secrets, which the chart's agent and
// operator do not use) is an error naming the variable.
func (c Container) Environ(refs map[string]string, configMaps map[string]map[string]string) ([]string, error) {
	var out []string
	vars := map[string]string{}
	set := func(name, value string) {
		vars[name] = value
		out = append(out, name+"="+value)
	}
	for _, e := range c.Env {
		src := e.ValueFrom
		switch {
		case src == nil:
			set(e.Name, expand(e.Value, vars))
		case src.FieldRef != nil:
			v, ok := refs[src.FieldRef.FieldPath]
			if !ok {
				return nil, fmt.Errorf("env %s: fieldRef %s: no value given", e.Name, src.FieldRef.FieldPath)
			}
			set(e.Name, v)
		case src.ResourceFieldRef != nil:
			v, ok := refs[src.ResourceFieldRef.Resource]
			if !ok {
				var err error
				if v, err = nodeAllocatable(src.ResourceFieldRef.Resource, src.ResourceFieldRef.Divisor); err != nil {
					return nil, fmt.Errorf("env %s: resourceFieldRef %s: %w", e.Name, src.ResourceFieldRef.Resource, err)
				}
			}
			set(e.Name, v)
		case src.ConfigMapKeyRef != nil:
			ref := src.ConfigMapKeyRef
			optional := ref.Optional != nil && *ref.Optional
			cm, ok := configMaps[ref.Name]
			if !ok {
				if optional {
					continue
				}
				return nil, fmt.Errorf("env %s: configMapKeyRef: no ConfigMap %s", e.Name, ref.Name)
			}
			v, ok := cm[ref.Key]
			if !ok {
				if optional {
					continue
				}
				return nil, fmt.Errorf("env %s: configMapKeyRef: ConfigMap %s has no key %s", e.Name, ref.Name, ref.Key)
			}
			set(e.Name, v)
		default:
			return nil, fmt.Errorf("env %s: unsupported valueFrom %+v", e.Name, *src)
		}
	}
	return out, nil
}

// Argv returns the container's command and args with $(VAR) references
// expanded from environ ("NAME=value") as a kubelet expands them, and the
// value of --config-dir replaced by configDir (when not empty).
func (c Container) Argv(configDir string, environ []string) []string {
	vars := map[string]string{}
	for _, kv := range environ {
		if name, value, ok := strings.Cut(kv, "="); ok {
			vars[name] = value
		}
	}
	argv := make([]string, 0, len(c.Command)+len(c.Args))
	for _, a := range c.Command {
		argv = append(argv, expand(a, vars))
	}
	for i := 0; i < len(c.Args); i++ {
		a := expand(c.Args[i], vars)
		if configDir != "" {
			if a == "--config-dir" && i+1 < len(c.Args) {
				argv = append(argv, a, configDir)
				i++
				continue
			}
			if strings.HasPrefix(a, "--config-dir=") {
				a = "--config-dir=" + configDir
			}
		}
		argv = append(argv, a)
	}
	return argv
}

// ConfigDir returns the value of the container's --config-dir arg.
func (c Container) ConfigDir() (string, bool) {
	for i, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--config-dir="); ok {
			return v, true
		}
		if a == "--config-dir" && i+1 < len(c.Args) {
			return c.Args[i+1], true
		}
	}
	return "", false
}

// expand is Kubernetes' $(VAR) expansion (the kubelet's, from
// third_party/forked/golang/expansion): $(NAME) becomes the value of NAME
// if it is defined and stays as it is if not, $$ becomes $, any other $
// is kept.
func expand(input string, vars map[string]string) string {
	var buf strings.Builder
	checkpoint := 0
	for cursor := 0; cursor < len(input); cursor++ {
		if input[cursor] != '$' || cursor+1 >= len(input) {
			continue
		}
		buf.WriteString(input[checkpoint:cursor])
		rest := input[cursor+1:]
		advance := 1
		switch rest[0] {
		case '$':
			buf.WriteByte('$')
		case '(':
			if end := strings.IndexByte(rest, ')'); end > 0 {
				name := rest[1:end]
				if v, ok := vars[name]; ok {
					buf.WriteString(v)
				} else {
					buf.WriteString("$(" + name + ")")
				}
				advance = end + 1
			} else {
				buf.WriteString("$(")
			}
		default:
			buf.WriteByte('$')
			buf.WriteByte(rest[0])
		}
		cursor += advance
		checkpoint = cursor + 1
	}
	return buf.String() + input[checkpoint:]
}

// nodeAllocatable is what a kubelet gives a resourceFieldRef to a limit
// the container does not set: the node's allocatable, here the machine's
// capacity, divided by the divisor and rounded up.
func nodeAllocatable(res string, divisor resource.Quantity) (string, error) {
	var capacity float64
	switch res {
	case "limits.memory":
		mem, err := memTotal()
		if err != nil {
			return "", err
		}
		capacity = float64(mem)
	case "limits.cpu":
		capacity = float64(runtime.NumCPU())
	default:
		return "", errors.New("no value given")
	}
	d := divisor.AsApproximateFloat64()
	if d <= 0 {
		d = 1
	}
	return strconv.FormatInt(int64(math.Ceil(capacity/d)), 10), nil
}

// memTotal is the machine's memory in bytes.
func memTotal() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/meminfo: %w", err)
			}
			return kb * 1024, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("/proc/meminfo has no MemTotal")
}
