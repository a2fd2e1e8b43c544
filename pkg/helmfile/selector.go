package helmfile

import (
	"fmt"
	"strings"
)

// selectorSet: ORed selectors of ANDed key=value / key!=value terms, as
// helmfile's --selector.
type selectorSet [][]selectorTerm

type selectorTerm struct {
	key, value string
	negate     bool
}

func parseSelectors(ss []string) (selectorSet, error) {
	var out selectorSet
	for _, s := range ss {
		var terms []selectorTerm
		for _, t := range strings.Split(s, ",") {
			t = strings.TrimSpace(t)
			if k, v, ok := strings.Cut(t, "!="); ok {
				terms = append(terms, selectorTerm{strings.TrimSpace(k), strings.TrimSpace(v), true})
			} else if k, v, ok := strings.Cut(t, "="); ok {
				terms = append(terms, selectorTerm{strings.TrimSpace(k), strings.TrimSpace(v), false})
			} else {
				return nil, fmt.Errorf("selector %q: want key=value or key!=value, comma-separated", s)
			}
		}
		out = append(out, terms)
	}
	return out, nil
}

func (s selectorSet) match(labels map[string]string) bool {
	if len(s) == 0 {
		return true
	}
	for _, terms := range s {
		ok := true
		for _, t := range terms {
			if (labels[t.key] == t.value) == t.negate {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}
