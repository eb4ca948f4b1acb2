//! Schedules: a template's schedule settings, a user's quiet hours, a workspace's autostart and
//! autostop, and what the scheduler will do next. Durations are milliseconds; 0 means off.

use serde::{Deserialize, Serialize};

/// The days on which the autostop requirement stops workspaces.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum RequirementDays {
    #[default]
    Off,
    Daily,
    Saturday,
    Sunday,
}

impl RequirementDays {
    pub fn as_str(self) -> &'static str {
        match self {
            RequirementDays::Off => "off",
            RequirementDays::Daily => "daily",
            RequirementDays::Saturday => "saturday",
            RequirementDays::Sunday => "sunday",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "off" | "none" => RequirementDays::Off,
            "daily" => RequirementDays::Daily,
            "saturday" => RequirementDays::Saturday,
            "sunday" => RequirementDays::Sunday,
            _ => return None,
        })
    }
}

/// Workspaces must stop at the start of their owner's quiet hours on `days`, every `weeks`
/// weeks (the week is the same for every workspace of the template).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AutostopRequirement {
    pub days: RequirementDays,
    pub weeks: u32,
}

impl Default for AutostopRequirement {
    fn default() -> Self {
        AutostopRequirement {
            days: RequirementDays::Off,
            weeks: 1,
        }
    }
}

/// Week days, lowercase English names, Monday first.
pub const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// A template's schedule (template-level, not per version; admins change it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct TemplateSchedule {
    /// How long a workspace runs without activity before it is stopped (0: never).
    pub default_autostop_ms: i64,
    /// How far activity pushes the deadline from now (0: activity does not extend it).
    pub activity_bump_ms: i64,
    pub autostop_requirement: AutostopRequirement,
    /// The week days (`WEEKDAYS` names) on which autostart may start a workspace.
    pub autostart_days: Vec<String>,
    /// Users may set their workspace's autostart schedule.
    pub allow_user_autostart: bool,
    /// Users may set their workspace's autostop duration (else the default applies).
    pub allow_user_autostop: bool,
    /// A workspace `failed` for this long is stopped (0: never).
    pub failure_cleanup_ms: i64,
    /// A workspace nobody has used for this long becomes dormant (0: never).
    pub dormancy_threshold_ms: i64,
    /// A workspace dormant for this long is deleted, with its home (0: never).
    pub dormancy_auto_deletion_ms: i64,
}

impl Default for TemplateSchedule {
    fn default() -> Self {
        TemplateSchedule {
            default_autostop_ms: 0,
            activity_bump_ms: 3_600_000,
            autostop_requirement: AutostopRequirement::default(),
            autostart_days: WEEKDAYS.iter().map(|d| d.to_string()).collect(),
            allow_user_autostart: true,
            allow_user_autostop: true,
            failure_cleanup_ms: 0,
            dormancy_threshold_ms: 0,
            dormancy_auto_deletion_ms: 0,
        }
    }
}

/// `PATCH /api/v1/templates/{name}/schedule`: the fields given change, the others stay.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct TemplateScheduleUpdate {
    pub default_autostop_ms: Option<i64>,
    pub activity_bump_ms: Option<i64>,
    pub autostop_requirement_days: Option<RequirementDays>,
    pub autostop_requirement_weeks: Option<u32>,
    pub autostart_days: Option<Vec<String>>,
    pub allow_user_autostart: Option<bool>,
    pub allow_user_autostop: Option<bool>,
    pub failure_cleanup_ms: Option<i64>,
    pub dormancy_threshold_ms: Option<i64>,
    pub dormancy_auto_deletion_ms: Option<i64>,
}

/// A user's quiet hours: when the autostop requirement may stop their workspaces.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuietHours {
    /// The schedule in force (`CRON_TZ=ZONE MIN HOUR * * *`).
    pub schedule: String,
    /// The user's own schedule, when they set one (ignored when `user_can_set` is false).
    pub custom: Option<String>,
    /// The server lets users choose their own (`--allow-custom-quiet-hours`).
    pub user_can_set: bool,
    pub timezone: String,
    /// When the quiet hours next begin.
    pub next_at: Option<i64>,
}

/// `PUT /api/v1/users/me/quiet-hours`: `null` goes back to the server's default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetQuietHours {
    pub schedule: Option<String>,
}

/// `PUT /api/v1/workspaces/{name}/autostart`: a cron (`CRON_TZ=ZONE MIN HOUR DOM MON DOW`), or
/// `null` for none.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetAutostart {
    pub schedule: Option<String>,
}

/// `PUT /api/v1/workspaces/{name}/autostop`: time without activity before a stop; `null` for
/// the template's default, 0 for never.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetAutostop {
    pub autostop_ms: Option<i64>,
}

/// `POST /api/v1/workspaces/{name}/extend`: the deadline becomes now + `duration_ms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    pub duration_ms: i64,
}

/// Why the scheduler queued a build (and `initiator` for a person's).
pub const BUILD_REASONS: [&str; 7] = [
    "initiator",
    "autostop",
    "autostart",
    "autostop requirement",
    "failure cleanup",
    "dormancy",
    "dormancy deletion",
];

/// The next thing the scheduler will do to a workspace.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduledAction {
    pub at: i64,
    /// `stop`, `start`, `delete` or `dormant`.
    pub action: String,
    /// A `BUILD_REASONS` entry.
    pub reason: String,
}

/// A workspace's schedule as it stands.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkspaceSchedule {
    /// The autostart cron, when set.
    pub autostart: Option<String>,
    /// The autostop the workspace asked for (`null`: the template's default).
    pub autostop_ms: Option<i64>,
    /// The autostop in force (the template may not let users choose).
    pub effective_autostop_ms: i64,
    /// When a running workspace stops unless there is activity.
    pub deadline: Option<i64>,
    /// When the autostop requirement stops it, whatever its activity.
    pub max_deadline: Option<i64>,
    pub next_autostart_at: Option<i64>,
    pub last_used_at: Option<i64>,
    /// When it became dormant; a dormant workspace must be activated before it starts.
    pub dormant_at: Option<i64>,
    /// When a dormant workspace will be deleted.
    pub deleting_at: Option<i64>,
    pub next: Option<ScheduledAction>,
}
