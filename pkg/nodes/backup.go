package nodes

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
)

// backup is manifest.json in a run's backup directory: what --revert needs.
type backup struct {
	RunID       string        `json:"runID"`
	Node        string        `json:"node"`
	Runtime     string        `json:"runtime,omitempty"` // "docker": ConfigFile is daemon.json (reload, not restart)
	Created     string        `json:"created"`
	ConfigFile  string        `json:"configFile"`
	CertsRoot   string        `json:"certsRoot"`
	Entries     []backupEntry `json:"entries"`
	CreatedDirs []string      `json:"createdDirs,omitempty"`
}

type backupEntry struct {
	Path    string `json:"path"`
	Existed bool   `json:"existed"`
	Old     string `json:"oldSHA256,omitempty"`
	New     string `json:"newSHA256"`
	Copy    string `json:"copy,omitempty"` // file name in the backup dir holding the old bytes
}

func writeManifest(ctx context.Context, n Node, dir string, b backup) error {
	j, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	return n.WriteFile(ctx, path.Join(dir, manifestName), j)
}

// newestBackup finds the newest run's backup on the node that was not reverted yet.
func newestBackup(ctx context.Context, o MirrorOptions, n Node) (string, *backup, error) {
	names, err := n.List(ctx, o.BackupDir)
	if err != nil {
		return "", nil, err
	}
	slices.Sort(names)
	slices.Reverse(names) // run ids sort by time
	for _, name := range names {
		if strings.HasSuffix(name, revertedSuffix) || strings.HasPrefix(name, ".") {
			continue
		}
		dir := path.Join(o.BackupDir, name)
		data, ok, err := n.ReadFile(ctx, path.Join(dir, manifestName))
		if err != nil {
			return "", nil, err
		}
		if !ok {
			continue
		}
		var b backup
		if err := json.Unmarshal(data, &b); err != nil {
			return "", nil, fmt.Errorf("backup %s: manifest.json: %w", dir, err)
		}
		return dir, &b, nil
	}
	return "", nil, nil
}
