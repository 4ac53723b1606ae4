def test_viewer_over_http(gql, tenant):
    data = gql.data("{ viewer { user { email roles } tenant { slug } authenticatedBy } }",
                    key=tenant.key)
    assert data["viewer"]["tenant"]["slug"] == tenant.slug
    assert data["viewer"]["user"]["roles"] == ["admin"]
    assert data["viewer"]["authenticatedBy"] == "api_key"
