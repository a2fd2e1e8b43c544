package helmfile

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// This file holds release template inheritance of today's helmfile: a
// release's `inherit: [{template: NAME, except: [...]}]` (and the state's
// defaultInherit) takes the fields of `templates: NAME`, itself possibly
// inheriting, as helmfile's state_exec_tmpl.go releaseWithInheritedTemplate
// merges them: a field already set wins, lists append (templates first),
// maps take the keys they lack.

// inheritEntry is one `inherit:` entry.
type inheritEntry struct {
	Template string   `json:"template"`
	Except   []string `json:"except"`
}

// inheritList takes both a list of entries and helmfile 0.150's single map.
type inheritList []inheritEntry

func (l *inheritList) UnmarshalJSON(b []byte) error {
	var one inheritEntry
	if json.Unmarshal(b, &one) == nil && one.Template != "" {
		*l = inheritList{one}
		return nil
	}
	var many []inheritEntry
	if err := json.Unmarshal(b, &many); err != nil {
		return fmt.Errorf("inherit: want a list of {template, except}: %w", err)
	}
	*l = many
	return nil
}

// withInherited returns s with the templates it inherits merged in.
func (st *state) withInherited(s releaseSpec) (releaseSpec, error) {
	inh := slices.Clone(s.Inherit)
	for _, d := range st.defaultInherit {
		if !slices.ContainsFunc(inh, func(e inheritEntry) bool { return e.Template == d }) {
			inh = append([]inheritEntry{{Template: d}}, inh...)
		}
	}
	if len(inh) == 0 {
		return s, nil
	}
	s.Inherit = inh
	return st.inheritTemplates(s, nil)
}

func (st *state) inheritTemplates(s releaseSpec, path []string) (releaseSpec, error) {
	var merged releaseSpec
	for _, in := range s.Inherit {
		if in.Template == "" {
			continue
		}
		if slices.Contains(path, in.Template) {
			return s, fmt.Errorf("release template inheritance is a cycle: %s", strings.Join(append(path, in.Template), " -> "))
		}
		raw, ok := st.templates[in.Template]
		if !ok {
			return s, fmt.Errorf("release %q inherits template %q, which templates: does not define", s.Name, in.Template)
		}
		var tpl releaseSpec
		b, _ := json.Marshal(raw)
		if err := json.Unmarshal(b, &tpl); err != nil {
			return s, fmt.Errorf("release template %q: %w", in.Template, err)
		}
		src, err := st.inheritTemplates(tpl, append(slices.Clone(path), in.Template))
		if err != nil {
			return s, err
		}
		for _, k := range in.Except {
			switch k {
			case "labels":
				src.Labels = nil
			case "values":
				src.Values = nil
			case "valuesTemplate":
				src.ValuesTemplate = nil
			case "setTemplate":
				src.SetTemplate = nil
			case "set":
				src.Set = nil
			case "setString":
				src.SetString = nil
			case "secrets":
				src.Secrets = nil
			default:
				return s, fmt.Errorf("release %q: inherit except %q: helmfile allows labels, values, valuesTemplate, set, setTemplate, setString, secrets", s.Name, k)
			}
		}
		fillFrom(&merged, &src)
	}
	fillFrom(&merged, &s)
	merged.Inherit = nil
	return merged, nil
}

// fillFrom merges src into dst as helmfile's mergo.Merge with
// WithAppendSlice does: zero fields of dst take src's, slices append, maps
// take the keys they lack.
func fillFrom(dst, src *releaseSpec) {
	d, s := reflect.ValueOf(dst).Elem(), reflect.ValueOf(src).Elem()
	for i := range d.NumField() {
		df, sf := d.Field(i), s.Field(i)
		if !df.CanSet() {
			continue
		}
		switch df.Kind() {
		case reflect.Slice:
			if sf.Len() > 0 {
				fresh := reflect.MakeSlice(df.Type(), 0, df.Len()+sf.Len())
				df.Set(reflect.AppendSlice(reflect.AppendSlice(fresh, df), sf))
			}
		case reflect.Map:
			if sf.Len() == 0 {
				continue
			}
			if df.IsNil() {
				df.Set(reflect.MakeMap(df.Type()))
			}
			for _, k := range sf.MapKeys() {
				if !df.MapIndex(k).IsValid() {
					df.SetMapIndex(k, sf.MapIndex(k))
				}
			}
		default:
			if df.IsZero() {
				df.Set(sf)
			}
		}
	}
}
