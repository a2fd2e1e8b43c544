package images

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"

	"go.yaml.in/yaml/v3"
)

// valuesNode builds the YAML node tree of decoded values (helm's merged
// values: maps, lists, strings, numbers, booleans, null) as the walker reads
// it: kinds, "!!str" on strings, scalars' text. Node.Encode gives the same
// walk but prints the values as YAML and parses them back, which took most of
// the time of finding images in a big chart's values. Map keys come sorted;
// a walk's findings do not depend on the order. Other types go through
// Node.Encode.
func valuesNode(v any) (*yaml.Node, error) {
	scalar := func(tag, value string) (*yaml.Node, error) {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}, nil
	}
	switch t := v.(type) {
	case nil:
		return scalar("!!null", "null")
	case string:
		return scalar("!!str", t)
	case bool:
		return scalar("!!bool", strconv.FormatBool(t))
	case int:
		return scalar("!!int", strconv.Itoa(t))
	case int64:
		return scalar("!!int", strconv.FormatInt(t, 10))
	case float64:
		return scalar("!!float", strconv.FormatFloat(t, 'g', -1, 64))
	case []any:
		n := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: make([]*yaml.Node, 0, len(t))}
		for _, e := range t {
			c, err := valuesNode(e)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, c)
		}
		return n, nil
	}
	m := valueMap(v)
	if m == nil {
		var n yaml.Node
		if err := n.Encode(v); err != nil {
			return nil, fmt.Errorf("value of type %T: %w", v, err)
		}
		return &n, nil
	}
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Content: make([]*yaml.Node, 0, 2*len(m))}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		c, err := valuesNode(m[k])
		if err != nil {
			return nil, err
		}
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k}, c)
	}
	return n, nil
}

// valueMap is v as a map of values (helm's chartutil.Values is one too).
func valueMap(v any) map[string]any {
	switch m := v.(type) {
	case map[string]any:
		return m
	default:
		rv := reflect.ValueOf(v)
		if rv.Kind() == reflect.Map && rv.Type().Key().Kind() == reflect.String && rv.Type().Elem().Kind() == reflect.Interface {
			return rv.Convert(reflect.TypeFor[map[string]any]()).Interface().(map[string]any)
		}
		return nil
	}
}

// valueString is a scalar value as YAML would print it; "" for maps, lists and null.
func valueString(v any) string {
	switch s := v.(type) {
	case nil, map[string]any, []any:
		return ""
	case string:
		return s
	case bool, int, int64, uint64, float64:
		return fmt.Sprint(s)
	default:
		return ""
	}
}
