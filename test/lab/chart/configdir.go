package chart

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// configMapKey is what the API server accepts as a ConfigMap key.
var configMapKey = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)

const dataDirLink = "..data"

// WriteConfigDir projects data into dir as a kubelet projects a ConfigMap
// volume (its AtomicWriter): the files live in a timestamped directory
// "..<time>" that the symlink "..data" points at, every key is a symlink
// "key" -> "..data/key", and an update swaps "..data" with one rename, so
// a reader sees the old or the new set of files, never a mix. Keys no
// longer in data are removed from dir. Cilium's --config-dir reader skips
// the directories and follows the symlinks.
func WriteConfigDir(dir string, data map[string]string) error {
	for k := range data {
		if !configMapKey.MatchString(k) || k == "." || k == ".." || strings.HasPrefix(k, "..") {
			return fmt.Errorf("config dir %s: invalid key %q", dir, k)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	oldTS, _ := os.Readlink(filepath.Join(dir, dataDirLink))

	tsDir, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return err
	}
	if err := os.Chmod(tsDir, 0o755); err != nil {
		return err
	}
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(tsDir, k), []byte(v), 0o644); err != nil {
			return err
		}
	}
	tmpLink := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(tsDir), tmpLink); err != nil {
		return err
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, dataDirLink)); err != nil {
		return err
	}

	// The user-visible names: a symlink per key, nothing else.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, "..") {
			continue
		}
		if _, keep := data[name]; keep && e.Type()&os.ModeSymlink != 0 {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		link := filepath.Join(dir, k)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join(dataDirLink, k), link); err != nil {
			return err
		}
	}

	if oldTS != "" && oldTS != filepath.Base(tsDir) && strings.HasPrefix(oldTS, "..") && !strings.Contains(oldTS, "/") {
		if err := os.RemoveAll(filepath.Join(dir, oldTS)); err != nil {
			return err
		}
	}
	return nil
}
