//! `wazoo recipe upload|list|call|delete`: the recipe command line (client side).
