"""The exception hierarchy of Partnerships Orchestrator.

::

    PartnershipsError                 every error the product raises on purpose
    ├── SpecError                     one or more problems in playbook documents (SpecProblem list)
    ├── InputError                    run inputs refused before the run starts
    ├── StepError                     a step failed at run time
    │   ├── ExpressionError           an expression or template failed to evaluate
    │   ├── StepTimeout               a step ran past its `timeout_seconds`
    │   ├── WebhookBlocked            an outbound webhook target is private and not allow-listed
    │   └── DeliveryError             a channel provider refused or failed a message
    ├── ConfigurationError            product configuration (home, connections) is unusable
    │   └── SecretError               a secret reference cannot be resolved (names the reference only)
    ├── ConnectorError                a vendor call failed (raised by `connectors/`)
    └── NotEncodable                  a value the state database does not keep (not plain data)

Every error renders to one line for users through ``str()``; a ``hint`` says what would fix it.
No error message ever contains a secret value.
"""

from __future__ import annotations


class PartnershipsError(Exception):
    """Root of every error the product raises on purpose."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(PartnershipsError):
    """Run inputs were refused before the run started."""


class StepError(PartnershipsError):
    """A step failed at run time."""


class ExpressionError(StepError):
    """An expression or template failed to evaluate."""


class StepTimeout(StepError):
    """A step ran past its ``timeout_seconds``."""


class WebhookBlocked(StepError):
    """An outbound webhook target resolves to a private address that is not allow-listed."""


class DeliveryError(StepError):
    """A channel provider refused or failed to deliver a message."""

    def __init__(self, message: str, hint: str | None = None, *, retryable: bool = True) -> None:
        self.retryable = retryable
        super().__init__(message, hint)


class ConfigurationError(PartnershipsError):
    """Product configuration (home directory, connections) is unusable."""


class SecretError(ConfigurationError):
    """A secret reference cannot be resolved. Names the reference, never the value."""


class ConnectorError(PartnershipsError):
    """A vendor call failed; raised by ``connectors/``."""


class NotEncodable(PartnershipsError):
    """A value the state database does not keep: only plain data (see ``store/codec.py``)."""
