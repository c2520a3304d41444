"""The foundation every other package stands on: settings built from the environment, the
use-case seam, what a use case declares (contracts, expectations), the error base and exit
codes, atomic file writes, DuckDB helpers, progress output. Knows nothing of Feast stages,
training or serving."""
