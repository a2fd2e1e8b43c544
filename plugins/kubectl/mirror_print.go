package kubectl

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/bkcache/bkcache/pkg/nodes"
	"github.com/bkcache/bkcache/pkg/printer"
)

// printReports writes mirror's (and --revert's) reports: with --dry-run each read node's plan
// and diffs first, then one table row per node. A node whose files were not read gets no plan
// and no claims about its files, only its state and the reason.
func printReports(w io.Writer, format string, reports []nodes.NodeReport, dryRun bool) error {
	if done, err := printer.Structured(w, format, reports); done {
		return err
	}
	if dryRun {
		planned := false
		for _, r := range reports {
			if !r.Read() || r.Status == nodes.StateFailed {
				continue
			}
			planned = true
			need := fmt.Sprintf("restart needed: %v", r.RestartNeeded)
			if r.ReloadNeeded {
				need = "dockerd reload needed: true"
			}
			fmt.Fprintf(w, "# node %s (%s): %d file(s), %s\n", r.Node, r.Runtime, len(r.Files), need)
			for _, fc := range r.Files {
				fmt.Fprint(w, fc.Diff)
			}
		}
		if planned {
			fmt.Fprintln(w)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tRUNTIME\tSTATUS\tFILES\tCONFIG.TOML\tRESTARTED\tVERIFIED\tTIME\tWARNINGS\tERROR")
	for _, r := range reports {
		files, cfg, restarted, verified := "-", "-", "-", "-"
		switch {
		case !r.Read():
		case r.Status == nodes.StateFailed:
			if len(r.RolledBack) > 0 {
				files = "rolled back"
			}
			if r.Restarted || r.Reloaded {
				restarted = "yes"
			}
		default:
			files, cfg, restarted = fileList(r), configState(r), restartState(r, dryRun)
		}
		if len(r.Verified) > 0 {
			n := 0
			for _, v := range r.Verified {
				if v.Pulled {
					n++
				}
			}
			verified = fmt.Sprintf("%d/%d pulls", n, len(r.Verified))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.1fs\t%s\t%s\n", r.Node, strings.TrimPrefix(r.Runtime, "containerd://"), r.Status,
			files, cfg, restarted, verified, r.Seconds, orDash(strings.Join(r.Warnings, "; ")), orDash(r.Error))
	}
	return tw.Flush()
}

func fileList(r nodes.NodeReport) string {
	var files []string
	for _, fc := range r.Files {
		p := fc.Path
		if r.CertsRoot != "" {
			p = strings.TrimPrefix(p, r.CertsRoot+"/")
		}
		files = append(files, string(fc.Action)+" "+p)
	}
	return orDash(strings.Join(files, ", "))
}

func configState(r nodes.NodeReport) string {
	cfg := "unchanged"
	if r.ConfigChanged {
		cfg = "changed"
	}
	if strings.HasPrefix(r.Runtime, "docker://") {
		cfg = "daemon.json " + cfg
	}
	return cfg
}

func restartState(r nodes.NodeReport, dryRun bool) string {
	switch {
	case r.Restarted:
		return fmt.Sprintf("yes (%.1fs)", r.RestartSeconds)
	case r.Reloaded:
		return fmt.Sprintf("reloaded (%.1fs)", r.RestartSeconds)
	case (r.RestartNeeded || r.ReloadNeeded) && dryRun:
		return "would"
	}
	return "no"
}

// printStatus writes mirror status: one row per node; a node that was not read shows only
// its state and the reason.
func printStatus(w io.Writer, format string, st []nodes.NodeStatus) error {
	if done, err := printer.Structured(w, format, st); done {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tRUNTIME\tSTATUS\tCONFIG_PATH\tMIRRORS\tBACKUPS\tERROR")
	for _, s := range st {
		cp, mirrors, backups := "-", "-", "-"
		if s.Status == nodes.StateOK {
			cp, mirrors, backups = configPath(s), mirrorList(s), fmt.Sprint(len(s.Backups))
		}
		problem := s.Error
		if problem == "" && s.Status == nodes.StateSkipped && len(s.Warnings) > 0 {
			problem = s.Warnings[0]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Node, strings.TrimPrefix(s.Runtime, "containerd://"), s.Status,
			cp, mirrors, backups, orDash(problem))
	}
	return tw.Flush()
}

func configPath(s nodes.NodeStatus) string {
	switch {
	case s.Config == nil:
		return "-"
	case s.Config.ConfigPath != "":
		return s.Config.ConfigPath
	case s.Config.CertsRoot != "":
		return s.Config.CertsRoot + " (default)"
	}
	return "(empty: hosts.toml ignored)"
}

func mirrorList(s nodes.NodeStatus) string {
	var mirrors []string
	if d := s.Docker; d != nil {
		if len(d.InsecureRegistries) > 0 {
			mirrors = append(mirrors, "insecure:"+strings.Join(d.InsecureRegistries, ","))
		}
		if len(d.RegistryMirrors) > 0 {
			mirrors = append(mirrors, "docker.io->"+strings.Join(d.RegistryMirrors, ","))
		}
	}
	for _, reg := range slices.Sorted(maps.Keys(s.Hosts)) {
		first := s.Hosts[reg].Server
		if len(s.Hosts[reg].Hosts) > 0 {
			first = s.Hosts[reg].Hosts[0]
		}
		mirrors = append(mirrors, reg+"->"+first)
	}
	return orDash(strings.Join(mirrors, ", "))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
