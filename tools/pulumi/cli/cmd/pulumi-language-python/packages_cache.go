package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// The packages a virtualenv declares change only when something is installed into it or removed
// from it: pip adds or deletes a package's directories in site-packages, which changes that
// directory's mtime, and a plugin.json rewritten in place changes its own. The key covers both,
// and PYTHONPATH, which adds directories the scan also reads. A program without a virtualenv
// (ambient Python) is scanned every time, as Pulumi's host does.
func packagesKey(info *pulumirpc.ProgramInfo) string {
	if info == nil {
		return ""
	}
	venv, _ := info.GetOptions().AsMap()["virtualenv"].(string)
	if venv == "" {
		return ""
	}
	if !filepath.IsAbs(venv) {
		venv = filepath.Join(info.GetRootDirectory(), venv)
	}
	sites, _ := filepath.Glob(filepath.Join(venv, "lib", "python*", "site-packages"))
	if len(sites) == 0 {
		return ""
	}
	sort.Strings(sites)
	digest := sha256.New()
	fmt.Fprintf(digest, "%s\x00%s\x00%s\x00", version, venv, os.Getenv("PYTHONPATH"))
	for _, site := range sites {
		stat, err := os.Stat(site)
		if err != nil {
			return ""
		}
		resolved, _ := filepath.EvalSymlinks(site)
		fmt.Fprintf(digest, "%s\x00%s\x00%d\x00", site, resolved, stat.ModTime().UnixNano())
		plugins, _ := filepath.Glob(filepath.Join(site, "*", "plugin.json"))
		sort.Strings(plugins)
		for _, plugin := range plugins {
			if p, err := os.Stat(plugin); err == nil {
				fmt.Fprintf(digest, "%s\x00%d\x00%d\x00", plugin, p.ModTime().UnixNano(), p.Size())
			}
		}
	}
	return hex.EncodeToString(digest.Sum(nil))
}

func packagesCacheFile(key string) string {
	if key == "" {
		return ""
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "x402db", "pulumi-language-python", key+".json")
}

func readPackages(key string) ([]pluginPackage, bool) {
	file := packagesCacheFile(key)
	if file == "" {
		return nil, false
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, false
	}
	var found []pluginPackage
	if json.Unmarshal(data, &found) != nil {
		return nil, false // a damaged entry is scanned again and rewritten
	}
	return found, true
}

// writePackages stores the answer under a temporary name renamed into place, so that two runs at
// once never read half an entry. A cache that cannot be written only costs the next run a scan.
func writePackages(key string, found []pluginPackage) {
	file := packagesCacheFile(key)
	if file == "" {
		return
	}
	data, err := json.Marshal(found)
	if err != nil || os.MkdirAll(filepath.Dir(file), 0o755) != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".partial-")
	if err != nil {
		return
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if werr != nil || cerr != nil || os.Rename(tmp.Name(), file) != nil {
		_ = os.Remove(tmp.Name())
	}
}
