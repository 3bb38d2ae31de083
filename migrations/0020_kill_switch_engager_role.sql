-- Who engaged a kill switch, by role: one a platform_admin engaged on a tenant may be changed or
-- released only by a platform_admin (src/operator/kill-switch.ts), not by the tenant's own admin.
ALTER TABLE kill_switches ADD COLUMN engaged_by_role text NOT NULL DEFAULT 'admin';
