"""The ``destinations.sepas`` config section lives in ``adapter.config``; re-exported here."""

from adapter.config import SepasAuthConfig, SepasConfig, SepasRoutes  # noqa: F401
