//! `exitnetctl consent …`.

use super::*;

pub async fn consent(
    t: ApiTarget,
    cmd: ConsentCommand,
    json_out: bool,
    wait: Duration,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let (channel, auth) = connect(&t, wait).await?;
    let mut c = pb::consent_service_client::ConsentServiceClient::with_interceptor(channel, auth);
    let shown = match cmd {
        ConsentCommand::Record {
            subject,
            recipients,
            purposes,
            need_areas,
            fields: cats,
            valid_for,
            method,
            witness,
            statute,
            restrictions,
            request_id: rid,
        } => {
            let until = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs()
                + valid_for;
            let terms = pb::ConsentTerms {
                recipients,
                purposes: codes(
                    "--purpose",
                    "PURPOSE_",
                    &purposes,
                    pb::Purpose::from_str_name,
                    |e| e as i32,
                )?,
                data_categories: codes(
                    "--field",
                    "DATA_CATEGORY_",
                    &cats,
                    pb::DataCategory::from_str_name,
                    |e| e as i32,
                )?,
                need_areas: codes(
                    "--need-area",
                    "NEED_AREA_",
                    &need_areas,
                    pb::NeedArea::from_str_name,
                    |e| e as i32,
                )?,
                legal_basis: Some(match statute {
                    Some(s) => pb::LegalBasis {
                        kind: pb::LegalBasisKind::Statute as i32,
                        statute: s,
                    },
                    None => pb::LegalBasis {
                        kind: pb::LegalBasisKind::Consent as i32,
                        statute: String::new(),
                    },
                }),
                restrictions: codes(
                    "--restriction",
                    "RESTRICTION_",
                    &restrictions,
                    pb::Restriction::from_str_name,
                    |e| e as i32,
                )?,
                valid_until: Some(exitnet_proto::Timestamp {
                    seconds: i64::try_from(until)?,
                    nanos: 0,
                }),
                ..Default::default()
            };
            let req = pb::RecordConsentRequest {
                request_id: request_id(rid),
                subject_ref: subject,
                terms: Some(terms),
                collection_method: to_pb(
                    "--method",
                    "COLLECTION_METHOD_",
                    &method,
                    pb::CollectionMethod::from_str_name,
                    |e| e as i32,
                )?,
                witness,
            };
            Shown::One(
                c.record_consent(req)
                    .await
                    .map_err(status)?
                    .into_inner()
                    .consent
                    .unwrap_or_default(),
            )
        }
        ConsentCommand::List { subject } => Shown::List(
            c.list_consents(pb::ListConsentsRequest {
                subject_ref: subject,
                page_size: 500,
                page_token: String::new(),
            })
            .await
            .map_err(status)?
            .into_inner()
            .consents,
        ),
        ConsentCommand::Show { consent_id } => Shown::One(
            c.get_consent(pb::GetConsentRequest {
                consent_id: consent_id.clone(),
            })
            .await
            .map_err(status_for("consent", &consent_id))?
            .into_inner()
            .consent
            .unwrap_or_default(),
        ),
        ConsentCommand::Withdraw { consent_id } => {
            let r = c
                .withdraw_consent(pb::WithdrawConsentRequest {
                    consent_id: consent_id.clone(),
                })
                .await
                .map_err(status_for("consent", &consent_id))?
                .into_inner();
            eprintln!(
                "withdrawn; {} recipient(s) are told to purge (`exitnetctl report purges` shows the receipts)",
                r.recipients_notified
            );
            Shown::One(r.consent.unwrap_or_default())
        }
    };
    match (shown, json_out) {
        (Shown::One(c), true) => writeln!(out, "{}", consent_json(&c))?,
        (Shown::One(c), false) => write!(out, "{}", consent_text(&c))?,
        (Shown::List(list), true) => writeln!(
            out,
            "{}",
            Value::Array(list.iter().map(consent_json).collect())
        )?,
        (Shown::List(list), false) => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    let v = consent_json(c);
                    vec![
                        c.consent_id.clone(),
                        c.subject_ref.clone(),
                        text(&v["recipients"]),
                        text(&v["recorded_at"]),
                        text(&v["valid_until"]),
                        text(&v["withdrawn_at"]),
                    ]
                })
                .collect();
            write!(
                out,
                "{}",
                table(
                    &[
                        "CONSENT",
                        "SUBJECT",
                        "RECIPIENTS",
                        "RECORDED AT",
                        "VALID UNTIL",
                        "WITHDRAWN AT"
                    ],
                    &rows
                )
            )?;
        }
    }
    Ok(())
}
