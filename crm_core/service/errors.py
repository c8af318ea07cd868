"""Service-desk errors; the panel turns each into a problem+json answer."""


class ServiceError(Exception):
    status = 400


class RequestNotFound(ServiceError):
    status = 404


class InvalidTransition(ServiceError):
    status = 409


class ConcurrentChange(ServiceError):
    """Someone else changed the request first (the version or the owner no longer matches)."""

    status = 409


class NotAllowed(ServiceError):
    status = 403
