package helmfile

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig/v3"
	"sigs.k8s.io/yaml"

	"github.com/bkcache/bkcache/pkg/userfile"
)

// renderTemplate runs helmfile-style Go templating: sprig plus helmfile's own
// functions. firstLine keeps template error lines equal to the file's lines
// when a part of a multi-document helmfile is rendered alone. strict makes a
// missing map key an error, as helmfile does.
func renderTemplate(file string, text string, firstLine int, data any, strict bool) ([]byte, error) {
	dir := filepath.Dir(file)
	funcs := sprig.TxtFuncMap()
	for k, v := range helmfileFuncs(dir) {
		funcs[k] = v
	}
	// tpl needs the function map itself: define it after the map exists.
	funcs["tpl"] = func(text string, data any) (string, error) {
		t, err := template.New(file + " (tpl)").Option("missingkey=error").Funcs(funcs).Parse(text)
		if err != nil {
			return "", err
		}
		var b bytes.Buffer
		if err := t.Execute(&b, data); err != nil {
			return "", err
		}
		return b.String(), nil
	}
	missing := "missingkey=zero"
	if strict {
		missing = "missingkey=error"
	}
	tpl, err := template.New(file).Option(missing).Funcs(funcs).Parse(strings.Repeat("\n", max(firstLine-1, 0)) + text)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if err := tpl.Execute(&b, data); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func helmfileFuncs(dir string) template.FuncMap {
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	return template.FuncMap{
		"requiredEnv": func(name string) (string, error) {
			if v, ok := os.LookupEnv(name); ok && v != "" {
				return v, nil
			}
			return "", fmt.Errorf("required env var `%s` is not set", name)
		},
		"required": func(msg string, v any) (any, error) {
			if v == nil || v == "" {
				return nil, fmt.Errorf("%s", msg)
			}
			return v, nil
		},
		"readFile": func(p string) (string, error) {
			b, err := userfile.Read(abs(p))
			return string(b), err
		},
		"isFile": func(p string) bool { st, err := os.Stat(abs(p)); return err == nil && st.Mode().IsRegular() },
		"isDir":  func(p string) bool { st, err := os.Stat(abs(p)); return err == nil && st.IsDir() },
		"toYaml": func(v any) (string, error) {
			b, err := yaml.Marshal(v)
			return strings.TrimSuffix(string(b), "\n"), err
		},
		"fromYaml": func(s string) (map[string]any, error) {
			m := map[string]any{}
			err := yaml.Unmarshal([]byte(s), &m)
			return m, err
		},
		"get":      func(path string, args ...any) (any, error) { return getPath(path, true, args...) },
		"getOrNil": func(path string, args ...any) (any, error) { return getPath(path, false, args...) },
		"setValueAtPath": func(path string, v any, m map[string]any) (map[string]any, error) {
			keys := strings.Split(path, ".")
			cur := m
			for _, k := range keys[:len(keys)-1] {
				next, ok := cur[k].(map[string]any)
				if !ok {
					next = map[string]any{}
					cur[k] = next
				}
				cur = next
			}
			cur[keys[len(keys)-1]] = v
			return m, nil
		},
		"exec": func(string, ...any) (string, error) {
			return "", fmt.Errorf("exec is not run by kubectl bkcache (offline, no commands): put the value in a values file")
		},
		"fetchSecretValue": func(string) (string, error) {
			return "", fmt.Errorf("fetchSecretValue needs secret backends, which kubectl bkcache does not reach: put a placeholder in a values file")
		},
	}
}

// getPath is helmfile's `get "a.b" [default] obj`.
func getPath(path string, mustExist bool, args ...any) (any, error) {
	var def any
	var obj any
	switch len(args) {
	case 1:
		obj = args[0]
	case 2:
		def, obj, mustExist = args[0], args[1], false
	default:
		return nil, fmt.Errorf("get %q: want (path, [default], object), got %d arguments", path, len(args)+1)
	}
	cur := obj
	for _, k := range strings.Split(path, ".") {
		if k == "" {
			continue
		}
		var v any
		var ok bool
		switch m := cur.(type) {
		case map[string]any:
			v, ok = m[k]
		case map[any]any:
			v, ok = m[k]
		}
		if !ok {
			if mustExist {
				return nil, fmt.Errorf("get %q: no value at %q", path, k)
			}
			return def, nil
		}
		cur = v
	}
	return cur, nil
}
