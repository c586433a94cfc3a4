"""A Microsoft Entra ID double: real RSA keys, a real JWKS, tokens shaped like Entra's.

Claim sets follow what Entra issues for v1.0 and v2.0 access tokens, delegated
(a signed-in user, `scp`) and app-only (client credentials, `roles`, `idtyp: app`),
so that the LKPS validator is exercised on the shapes it meets in production. The ASGI
app serves the endpoints LKPS and its SDKs use: OpenID configuration, the JWKS, and
the v2.0 token endpoint (client credentials, with a client secret, a certificate's
signed client assertion, or a federated identity credential's assertion: workload
identity), and a managed identity endpoint shaped like App Service's
(`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`), which azure-identity's
`ManagedIdentityCredential` uses when those variables are set.

Like Entra, the token endpoint issues a token in the version the resource accepts:
Microsoft Graph takes v1.0 tokens (`iss` sts.windows.net, `appid`), whatever endpoint
version asked for them.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

LOGIN_HOST = "https://login.microsoftonline.com"
# Microsoft Graph as a resource: its App ID URI and its well-known application id.
GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# The audience Entra requires of a federated (workload identity) assertion.
TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"
_NAMESPACE = uuid.UUID("6f1c2f0e-8f5e-4b8e-9a43-3c1b8f0b7a11")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    private_key: rsa.RSAPrivateKey
    kid: str

    @classmethod
    def generate(cls, kid: str | None = None) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(key, kid or _thumbprint(key))

    @classmethod
    def from_pem(cls, pem: bytes) -> SigningKey:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("not an RSA private key")
        return cls(key, _thumbprint(key))

    def to_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {"kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid, **jwk}

    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _thumbprint(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _b64url(hashlib.sha1(der, usedforsecurity=False).digest())


@dataclass(frozen=True)
class FederatedCredential:
    """A federated identity credential on an app registration: Entra accepts, instead of
    a secret, a token that `issuer` (a Kubernetes cluster's OIDC issuer, say) signed for
    `subject`. `assertion()` is what the platform writes to AZURE_FEDERATED_TOKEN_FILE."""

    issuer: str
    subject: str
    key: SigningKey = field(default_factory=SigningKey.generate)
    audience: str = TOKEN_EXCHANGE_AUDIENCE

    def assertion(self, *, lifetime: int = 3600, subject: str | None = None) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": subject or self.subject,
            "aud": [self.audience],
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
        }
        return jwt.encode(
            claims, self.key.private_key, algorithm="RS256", headers={"kid": self.key.kid}
        )


def stable_uuid(*parts: str) -> str:
    """The same object id for the same user or app in the same tenant, every run."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


@dataclass
class EntraDouble:
    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    keys: list[SigningKey] = field(default_factory=lambda: [SigningKey.generate()])
    user_domain: str = "contoso.example"
    # Registered confidential clients for the token endpoint: client id -> secret.
    client_secrets: dict[str, str] = field(default_factory=dict)
    # A secret every client id (a UUID) may use besides those: `lkps dev`'s public dev
    # secret, so that any agent id runs against a dev instance (`lkps dev agent --agent`).
    any_client_secret: str | None = None
    # Certificates registered on a client's app registration (client assertion, PS256/RS256).
    client_certificates: dict[str, list[x509.Certificate]] = field(default_factory=dict)
    # Federated identity credentials (workload identity): client id -> credentials.
    federated_credentials: dict[str, list[FederatedCredential]] = field(default_factory=dict)
    # Managed identities the managed identity endpoint serves: client id -> the secret the
    # platform puts in IDENTITY_HEADER. The first one is the system-assigned identity.
    managed_identities: dict[str, str] = field(default_factory=dict)
    # App roles granted to a client for a resource (audience): (client, audience) -> roles.
    # Graph's application id and App ID URI name the same resource.
    app_role_assignments: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    # Access token version a resource accepts (its `requestedAccessTokenVersion`); others: 2.0.
    resource_token_versions: dict[str, str] = field(
        default_factory=lambda: {GRAPH_RESOURCE: "1.0", GRAPH_APP_ID: "1.0"}
    )
    jwks_available: bool = True
    # Served as the JWKS endpoint's body (application/json) instead of the key set, to
    # test what a broken or hostile document does to a relying party.
    jwks_body: bytes | None = None
    jwks_requests: int = 0
    token_requests: int = 0
    managed_identity_requests: int = 0

    @property
    def signing_key(self) -> SigningKey:
        return self.keys[0]

    @property
    def issuer_v2(self) -> str:
        return f"{LOGIN_HOST}/{self.tenant_id}/v2.0"

    @property
    def issuer_v1(self) -> str:
        return f"https://sts.windows.net/{self.tenant_id}/"

    def jwks_url(self, base_url: str) -> str:
        """Where this tenant's JWKS is served when `asgi_app()` runs at `base_url`."""
        return f"{base_url.rstrip('/')}/{self.tenant_id}/discovery/v2.0/keys"

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk() for key in self.keys]}

    # Tokens.

    def sign(
        self,
        claims: Mapping[str, Any],
        *,
        key: SigningKey | None = None,
        headers: Mapping[str, Any] | None = None,
    ) -> str:
        key = key or self.signing_key
        header = {"typ": "JWT", "kid": key.kid, "x5t": key.kid, **(headers or {})}
        return jwt.encode(dict(claims), key.private_key, algorithm="RS256", headers=header)

    def user_claims(
        self,
        *,
        audience: str,
        client_app_id: str,
        username: str = "alice",
        name: str | None = None,
        version: str = "2.0",
        scopes: str = "access_as_user",
        roles: Iterable[str] = (),
        lifetime: int = 3600,
        issued_at: int | None = None,
    ) -> dict[str, Any]:
        now = int(time.time()) if issued_at is None else issued_at
        oid = stable_uuid(self.tenant_id, "user", username)
        upn = f"{username}@{self.user_domain}"
        display = name or username.replace(".", " ").title()
        claims: dict[str, Any] = {
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "aio": _b64url(secrets.token_bytes(48)),
            "name": display,
            "oid": oid,
            "rh": f"0.{_b64url(secrets.token_bytes(30))}.",
            "scp": scopes,
            # Entra's `sub` is pairwise per application, never the object id.
            "sub": _b64url(hashlib.sha256(f"{oid}/{client_app_id}".encode()).digest()),
            "tid": self.tenant_id,
            "uti": _b64url(secrets.token_bytes(16)),
            "ver": version,
        }
        if version == "2.0":
            claims |= {
                "iss": self.issuer_v2,
                "azp": client_app_id,
                "azpacr": "0",
                "preferred_username": upn,
                "sid": str(uuid.uuid4()),
            }
        else:
            given, _, family = display.partition(" ")
            claims |= {
                "iss": self.issuer_v1,
                "acr": "1",
                "amr": ["pwd", "mfa"],
                "appid": client_app_id,
                "appidacr": "0",
                "given_name": given,
                "family_name": family or given,
                "ipaddr": "192.0.2.10",
                "unique_name": upn,
                "upn": upn,
            }
        if roles := list(roles):
            claims["roles"] = roles
        return claims

    def app_claims(
        self,
        *,
        audience: str,
        client_app_id: str,
        version: str = "2.0",
        roles: Iterable[str] = (),
        lifetime: int = 3600,
        issued_at: int | None = None,
    ) -> dict[str, Any]:
        now = int(time.time()) if issued_at is None else issued_at
        service_principal = stable_uuid(self.tenant_id, "servicePrincipal", client_app_id)
        claims: dict[str, Any] = {
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "aio": _b64url(secrets.token_bytes(48)),
            "idtyp": "app",
            "oid": service_principal,
            "rh": f"0.{_b64url(secrets.token_bytes(30))}.",
            "sub": service_principal,
            "tid": self.tenant_id,
            "uti": _b64url(secrets.token_bytes(16)),
            "ver": version,
        }
        if version == "2.0":
            claims |= {"iss": self.issuer_v2, "azp": client_app_id, "azpacr": "1"}
        else:
            claims |= {
                "iss": self.issuer_v1,
                "appid": client_app_id,
                "appidacr": "1",
                "idp": self.issuer_v1,
            }
        if roles := list(roles):
            claims["roles"] = roles
        return claims

    def user_token(self, **kwargs: Any) -> str:
        return self.sign(self.user_claims(**kwargs))

    def app_token(self, **kwargs: Any) -> str:
        return self.sign(self.app_claims(**kwargs))

    # HTTP.

    def asgi_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/{tenant}/discovery/v2.0/keys", self._keys_endpoint),
                Route("/{tenant}/discovery/keys", self._keys_endpoint),
                Route("/{tenant}/v2.0/.well-known/openid-configuration", self._openid_endpoint),
                Route("/{tenant}/oauth2/v2.0/token", self._token_endpoint, methods=["POST"]),
                Route("/msi/token", self._managed_identity_endpoint),
            ]
        )

    async def _keys_endpoint(self, request: Request) -> Response:
        self.jwks_requests += 1
        if not self.jwks_available:
            return _aad_error(503, "temporarily_unavailable", "AADSTS90033", "try again later")
        if not self._known_tenant(request):
            return _aad_error(400, "invalid_tenant", "AADSTS90002", "tenant not found")
        if self.jwks_body is not None:
            return Response(self.jwks_body, media_type="application/json")
        return JSONResponse(self.jwks())

    async def _openid_endpoint(self, request: Request) -> JSONResponse:
        if not self._known_tenant(request):
            return _aad_error(400, "invalid_tenant", "AADSTS90002", "tenant not found")
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "issuer": self.issuer_v2,
                "jwks_uri": self.jwks_url(base),
                "token_endpoint": f"{base}/{self.tenant_id}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/{self.tenant_id}/oauth2/v2.0/authorize",
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "token"],
                "subject_types_supported": ["pairwise"],
                "tenant_region_scope": "EU",
            }
        )

    async def _token_endpoint(self, request: Request) -> JSONResponse:
        self.token_requests += 1
        if not self._known_tenant(request):
            return _aad_error(400, "invalid_request", "AADSTS90002", "tenant not found")
        form = await _url_encoded_form(request)
        if form.get("grant_type") != "client_credentials":
            return _aad_error(400, "unsupported_grant_type", "AADSTS70003", "unsupported grant")
        client_id = str(form.get("client_id", ""))
        secrets_of_clients = self.client_secrets
        if self.any_client_secret is not None and _is_uuid(client_id):
            secrets_of_clients = {client_id: self.any_client_secret, **self.client_secrets}
        if not any(
            client_id in registered
            for registered in (
                secrets_of_clients,
                self.client_certificates,
                self.federated_credentials,
            )
        ):
            return _aad_error(400, "unauthorized_client", "AADSTS700016", "application not found")
        if "client_assertion" in form:
            failure = self._check_client_assertion(
                request, client_id, str(form.get("client_assertion_type", "")), form
            )
            if failure is not None:
                return failure
        elif "client_secret" in form:
            expected = secrets_of_clients.get(client_id)
            if expected is None or not secrets.compare_digest(
                str(form.get("client_secret", "")), expected
            ):
                return _aad_error(401, "invalid_client", "AADSTS7000215", "invalid client secret")
        else:
            return _aad_error(
                401,
                "invalid_client",
                "AADSTS7000218",
                "the request body must contain 'client_assertion' or 'client_secret'",
            )
        scope = str(form.get("scope", ""))
        if not scope.endswith("/.default"):
            return _aad_error(400, "invalid_scope", "AADSTS1002012", "scope must end in /.default")
        token = self._token_for(client_id, scope.removesuffix("/.default"))
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": 3599,
                "ext_expires_in": 3599,
                "access_token": token,
            }
        )

    def _token_for(self, client_id: str, audience: str) -> str:
        """An app-only token for `audience`, in the version that resource accepts."""
        resource = GRAPH_RESOURCE if audience == GRAPH_APP_ID else audience
        return self.app_token(
            audience=audience,
            client_app_id=client_id,
            roles=self.app_role_assignments.get((client_id, resource), []),
            version=self.resource_token_versions.get(audience, "2.0"),
        )

    async def _managed_identity_endpoint(self, request: Request) -> JSONResponse:
        """App Service's managed identity endpoint (api-version 2019-08-01)."""
        self.managed_identity_requests += 1
        query = request.query_params
        wanted = query.get("client_id") or next(iter(self.managed_identities), None)
        header = request.headers.get("x-identity-header", "")
        if wanted is None or wanted not in self.managed_identities:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "no such identity"}, 400
            )
        if not secrets.compare_digest(header, self.managed_identities[wanted]):
            return JSONResponse(
                {"error": "unauthorized", "error_description": "bad X-IDENTITY-HEADER"}, 401
            )
        resource = query.get("resource", "").removesuffix("/.default")
        if not resource:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "no resource"}, 400
            )
        lifetime = 3599
        return JSONResponse(
            {
                "access_token": self._token_for(wanted, resource),
                "expires_on": str(int(time.time()) + lifetime),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": wanted,
            }
        )

    def _check_client_assertion(
        self, request: Request, client_id: str, assertion_type: str, form: Mapping[str, Any]
    ) -> JSONResponse | None:
        """Verify a client assertion (a certificate's, or a federated credential's); an
        error response if it fails."""
        if assertion_type != CLIENT_ASSERTION_TYPE:
            return _aad_error(400, "invalid_request", "AADSTS50027", "unsupported assertion type")
        assertion = str(form.get("client_assertion", ""))
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return _aad_error(401, "invalid_client", "AADSTS50027", "malformed client assertion")
        if "x5t" not in header and "x5t#S256" not in header:
            return self._check_federated_assertion(client_id, assertion)
        # Thumbprints are base64url, with or without padding (azure-identity keeps it).
        x5t_s256 = str(header.get("x5t#S256", "")).rstrip("=")
        x5t = str(header.get("x5t", "")).rstrip("=")
        certificate = next(
            (
                cert
                for cert in self.client_certificates.get(client_id, [])
                if x5t_s256 == _b64url(cert.fingerprint(hashes.SHA256()))
                or x5t == _b64url(cert.fingerprint(hashes.SHA1()))  # noqa: S303 (an identifier, as Entra uses it)
            ),
            None,
        )
        if certificate is None:
            return _aad_error(
                401,
                "invalid_client",
                "AADSTS700027",
                "the certificate used to sign the client assertion is not registered",
            )
        token_url = str(request.url.replace(query=""))
        try:
            claims = jwt.decode(
                assertion,
                certificate.public_key(),  # type: ignore[arg-type]
                algorithms=["PS256", "RS256"],
                audience=[token_url, f"{LOGIN_HOST}{request.url.path}"],
                issuer=client_id,
                options={"require": ["exp", "nbf", "aud", "iss", "sub", "jti"]},
            )
        except jwt.PyJWTError as exc:
            return _aad_error(
                401, "invalid_client", "AADSTS700027", f"client assertion failed validation: {exc}"
            )
        if claims.get("sub") != client_id:
            return _aad_error(401, "invalid_client", "AADSTS700023", "assertion subject mismatch")
        return None

    def _check_federated_assertion(self, client_id: str, assertion: str) -> JSONResponse | None:
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return _aad_error(401, "invalid_client", "AADSTS50027", "malformed client assertion")
        for credential in self.federated_credentials.get(client_id, []):
            if (unverified.get("iss"), unverified.get("sub")) != (
                credential.issuer,
                credential.subject,
            ):
                continue
            try:
                jwt.decode(
                    assertion,
                    credential.key.private_key.public_key(),
                    algorithms=["RS256"],
                    audience=credential.audience,
                    issuer=credential.issuer,
                    options={"require": ["exp", "iss", "sub", "aud"]},
                )
            except jwt.PyJWTError as exc:
                return _aad_error(
                    401, "invalid_client", "AADSTS700024", f"client assertion is not valid: {exc}"
                )
            return None
        return _aad_error(
            401,
            "invalid_client",
            "AADSTS70021",
            "no matching federated identity record found for presented assertion",
        )

    def _known_tenant(self, request: Request) -> bool:
        return request.path_params["tenant"] in {self.tenant_id, "common", "organizations"}


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def _url_encoded_form(request: Request) -> dict[str, str]:
    """The token request's `application/x-www-form-urlencoded` body (first value per key).

    Parsed here rather than with `request.form()`, which needs python-multipart."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {key: values[0] for key, values in parse_qs(body, keep_blank_values=True).items()}


def _aad_error(status: int, error: str, code: str, description: str) -> JSONResponse:
    return JSONResponse(
        {
            "error": error,
            "error_description": f"{code}: {description}",
            "error_codes": [int(code.removeprefix("AADSTS"))],
            "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4()),
        },
        status_code=status,
    )
