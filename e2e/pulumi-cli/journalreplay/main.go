// Command pulumi-journal-replay is a test oracle: it replays journal entries onto a base
// deployment with the CLI's own backend.JournalReplayer, so Procella's replay can be compared
// with the one the pinned CLI (and the Pulumi Cloud journal protocol) is built around.
//
// stdin:  {"base": <apitype.DeploymentV3 or null>, "entries": [<apitype.JournalEntry>, ...]}
// stdout: the apitype.TypedDeployment, {"version": N, "features": [...], "deployment": {...}}
//
// Entries are applied in the order given (sorting by sequenceID is the caller's business).
// The manifest of the result is stamped with time.Now() and the version linked in with
// -ldflags, as the CLI does, so callers should not compare it.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/pulumi/pulumi/pkg/v3/backend"
	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
)

type input struct {
	Base    *apitype.DeploymentV3  `json:"base"`
	Entries []apitype.JournalEntry `json:"entries"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-journal-replay: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	var in input
	decoder := json.NewDecoder(os.Stdin)
	if err := decoder.Decode(&in); err != nil {
		return fmt.Errorf("reading the input: %w", err)
	}
	if decoder.More() {
		return errors.New("reading the input: more than one JSON value")
	}
	deployment, err := replay(in)
	if err != nil {
		return err
	}
	// json.Encoder writes compact JSON and a newline, as encoding/json always does.
	return json.NewEncoder(os.Stdout).Encode(deployment)
}

func replay(in input) (apitype.TypedDeployment, error) {
	base := in.Base
	if base == nil {
		// The CLI starts from an empty deployment for a new stack; the replayer dereferences
		// its base (e.g. for secrets managers), so nil is not an option.
		base = &apitype.DeploymentV3{}
	}
	replayer := backend.NewJournalReplayer(base)
	for i, entry := range in.Entries {
		if err := replayer.Add(entry); err != nil {
			return apitype.TypedDeployment{}, fmt.Errorf("entry %d (%v): %w", i, entry, err)
		}
	}
	deployment, err := replayer.GenerateDeployment()
	if err != nil {
		return apitype.TypedDeployment{}, fmt.Errorf("generating the deployment: %w", err)
	}
	return deployment, nil
}
