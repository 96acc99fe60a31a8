use std::sync::Arc;

use chrono::DateTime;
use tonic::{Request, Response, Status};

use super::{
    proto::{
        Claims, GetJwksRequest, GetJwksResponse, JsonWebKey, ValidateTokenRequest, ValidateTokenResponse,
        token_service_server::TokenService,
    },
    timestamp,
};
use crate::{service::Identity, tokens::AccessClaims};

pub struct TokenApi {
    identity: Arc<Identity>,
}

impl TokenApi {
    pub fn new(identity: Arc<Identity>) -> Self {
        Self { identity }
    }
}

pub fn claims_message(claims: &AccessClaims) -> Claims {
    let at = |seconds| DateTime::from_timestamp(seconds, 0).map(timestamp);
    Claims {
        issued_at: at(claims.iat),
        expires_at: at(claims.exp),
        subject: claims.sub.clone(),
        email: claims.email.clone(),
        full_name: claims.name.clone(),
        session_id: claims.sid.clone(),
        token_id: claims.jti.clone(),
        issuer: claims.iss.clone(),
        audience: vec![claims.aud.clone()],
    }
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    /// RFC 7662: an inactive token is an answer, not an error, and the reason stays here.
    #[tracing::instrument(skip_all)]
    async fn validate_token(
        &self,
        request: Request<ValidateTokenRequest>,
    ) -> Result<Response<ValidateTokenResponse>, Status> {
        let response = match self.identity.validate(&request.get_ref().access_token) {
            Ok(verified) => {
                ValidateTokenResponse { active: true, claims: Some(claims_message(&verified.claims)) }
            }
            Err(reason) => {
                tracing::debug!(%reason, "inactive token");
                ValidateTokenResponse { active: false, claims: None }
            }
        };
        Ok(Response::new(response))
    }

    #[tracing::instrument(skip_all)]
    async fn get_jwks(&self, _request: Request<GetJwksRequest>) -> Result<Response<GetJwksResponse>, Status> {
        let keys = self
            .identity
            .tokens()
            .keys()
            .jwks()
            .iter()
            .map(|jwk| JsonWebKey {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: jwk.x.clone(),
                kid: jwk.kid.clone(),
                alg: "EdDSA".into(),
                r#use: "sig".into(),
            })
            .collect();
        Ok(Response::new(GetJwksResponse { keys }))
    }
}
